"""チュートリアル（nbs/10_colab_dpo_training.ipynb）が、前のノートブック（colab_dpo_training_improved.ipynb）の故障の種類を繰り返さないことを確かめる。

issue 7 が挙げた故障の種類ごとに検査関数を一つ持ち、(1) チュートリアルでは問題が 0 件、(2) その故障を入れた小さなノートブックでは
1 件以上になる（＝検査が本当に効く）ことを確かめる。加えて、LoRA の対象と登録簿の全アーキテクチャの層の名前、図の日本語、
トレーニングガイドとの対応を確かめる。"""
from __future__ import annotations
import ast, io, json, re, logging, warnings
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT/'nbs'/'10_colab_dpo_training.ipynb'
GUIDE = ROOT/'nbs'/'11_training_guide.ipynb'
LR_FLOOR = 1e-5  # これ未満の学習率では LoRA はほとんど動かない（前のノートブックは 5e-7）

# ---------------------------------------------------------------- ノートブックの読み方

def read_nb(path:Path) -> list[dict]:
    "ノートブックのセルを {type, source, outputs} のリストにする"
    nb = json.loads(Path(path).read_text(encoding='utf-8'))
    return [dict(type=c['cell_type'], source=''.join(c['source']) if isinstance(c['source'], list) else c['source'],
                 outputs=c.get('outputs', [])) for c in nb['cells']]

def nb(*cells) -> list[dict]:
    "検査が失敗することを確かめるための小さなノートブック: ('code', src) か ('markdown', src) を並べる"
    return [dict(type=t, source=s, outputs=[]) for t,s in cells]

def flags(src:str) -> set[str]:
    "`#| gpu`・`#| eval: false` などの指示（'eval: false' の形でそろえる）"
    return {re.sub(r'\s+', ' ', l[3:].strip()) for l in src.splitlines() if l.startswith('#|')}

_INLINE = re.compile(r'^(\s*(?:if|elif|else|for|while|with|try|except)\b[^#]*?:)\s*([!%].*)$')

def python_source(src:str) -> str:
    "`#|` の指示を除き、シェル（`!…`）とマジック（`%…`）の行を `__shell__('…')` の呼び出しに置き換えた Python"
    out = []
    for line in src.splitlines():
        s = line.lstrip()
        if line.startswith('#|'): out.append(''); continue
        if s.startswith(('!', '%')): out.append(f"{line[:len(line)-len(s)]}__shell__({s[1:]!r})"); continue
        m = _INLINE.match(line)
        out.append(f"{m.group(1)} __shell__({m.group(2)[1:]!r})" if m else line)
    return '\n'.join(out)

def code_cells(cells) -> list[tuple[int, str]]:
    return [(i, c['source']) for i,c in enumerate(cells) if c['type'] == 'code']

def parse(src:str):
    try: return ast.parse(python_source(src))
    except SyntaxError: return None

def call_name(node) -> str|None:
    f = node.func if isinstance(node, ast.Call) else None
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None

def dotted(node) -> str:
    if isinstance(node, ast.Attribute): return dotted(node.value) + '.' + node.attr
    return node.id if isinstance(node, ast.Name) else ''

def calls(tree) -> list[ast.Call]: return [n for n in ast.walk(tree) if isinstance(n, ast.Call)] if tree else []

def shell_cmds(tree) -> list[str]:
    return [c.args[0].value for c in calls(tree) if call_name(c) == '__shell__' and c.args and isinstance(c.args[0], ast.Constant)]

# ---------------------------------------------------------------- 故障の種類ごとの検査（問題の説明のリストを返す）

def check_compiles(cells) -> list[str]:
    "どのコードのセルも（シェルの行と指示を除けば）Python として正しい。Markdown のつもりのコードのセルは「すべて実行」を止める"
    out = []
    for i,src in code_cells(cells):
        if src.lstrip().startswith('%%'): continue
        try: compile(python_source(src), f'cell {i}', 'exec')
        except SyntaxError as e: out.append(f'cell {i}: Python として読めません（{e.msg}、{e.lineno} 行目）')
    return out

_EXIT = {'sys.exit', 'exit', 'quit', 'os._exit'}

def check_import_exit(cells) -> list[str]:
    "import に失敗したら終了するセルと、`DPOConfig` の直接の import（古い TRL に無い）が無い"
    out = []
    for i,src in code_cells(cells):
        tree = parse(src)
        if tree is None: continue
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and dotted(n.func) in _EXIT: out.append(f'cell {i}: {dotted(n.func)}() でノートブックを終了します')
            if isinstance(n, ast.Raise) and n.exc is not None and 'SystemExit' in ast.dump(n.exc): out.append(f'cell {i}: SystemExit を投げます')
            if isinstance(n, ast.ImportFrom) and n.module == 'trl' and any(a.name == 'DPOConfig' for a in n.names):
                out.append(f'cell {i}: trl から DPOConfig を直接 import します（TRL 0.8 以前には無い）。make_dpo_trainer / train_dpo を使う')
    return out

_REMOVED = re.compile(r'\b(evaluation_strategy|no_cuda)\b')

def check_removed_options(cells) -> list[str]:
    "削除済みの設定名（`evaluation_strategy` は transformers 4.51、`no_cuda` は 5.0 で削除）がコードに無い"
    return [f'cell {i}: 削除済みの設定名 {m.group(1)}' for i,src in code_cells(cells) for m in _REMOVED.finditer(src)]

_TRAINER = {'DPOTrainer', 'Trainer', 'DPOConfig', 'TrainingArguments', 'make_dpo_trainer', 'train_dpo', 'train', 'from_pretrained', 'load_model'}
_TRAIN_CALLS = {'train_dpo', 'train'}

def _handler_swallows(h:ast.ExceptHandler) -> bool:
    return all(isinstance(s, (ast.Pass, ast.Continue)) or isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) for s in h.body)

def check_retry_fallback(cells) -> list[str]:
    "`except` の中で別の引数で作り直さない・例外を黙って捨てない・学習の失敗を握りつぶさない（握りつぶすと後の保存のセルが走る）"
    out = []
    for i,src in code_cells(cells):
        tree = parse(src)
        if tree is None: continue
        for t in [n for n in ast.walk(tree) if isinstance(n, ast.Try)]:
            trains = any(call_name(c) in _TRAIN_CALLS for s in t.body for c in calls(s))
            for h in t.handlers:
                again = sorted({call_name(c) for s in h.body for c in calls(s)} & _TRAINER)
                if again: out.append(f'cell {i}: except の中で {", ".join(again)} をもう一度呼びます（最初のエラーが隠れる）')
                if _handler_swallows(h): out.append(f'cell {i}: except で例外を黙って捨てます')
                if trains and not any(isinstance(n, ast.Raise) for s in h.body for n in ast.walk(s)):
                    out.append(f'cell {i}: 学習の失敗を握りつぶします（raise しないと後の保存のセルが走る）')
    return out

_SAVE_CALLS = {'make_archive', 'save_model', 'save_pretrained', 'push_to_hub', 'push_run', 'merge_adapter', 'download', 'copytree', 'upload_folder'}
_SAVE_SHELL = re.compile(r'^\s*(zip|tar|cp|huggingface-cli\s+upload)\b')
_CHECKS = ('is_file', 'exists', 'is_dir', 'glob')

def _is_guard(s:ast.stmt) -> bool:
    "アダプターのファイルがあることを確かめる文（assert か、raise する if）"
    if isinstance(s, ast.Assert): return any(k in ast.unparse(s.test) for k in _CHECKS)
    if isinstance(s, ast.If): return any(k in ast.unparse(s.test) for k in _CHECKS) and any(isinstance(n, ast.Raise) for n in ast.walk(s))
    return False

def check_save_guarded(cells) -> list[str]:
    "学習の後、保存・zip・統合・アップロードの前に、結果（アダプターのファイル）があることを確かめている"
    out, guarded = [], False
    for i,src in code_cells(cells):
        tree = parse(src)
        if tree is None: continue
        for s in tree.body:
            if any(call_name(c) in _TRAIN_CALLS for c in calls(s)): guarded = False
            if _is_guard(s): guarded = True
            saves = sorted({call_name(c) for c in calls(s)} & _SAVE_CALLS) + [c for c in shell_cmds(s) if _SAVE_SHELL.match(c)]
            if saves and not guarded: out.append(f'cell {i}: 結果があることを確かめずに保存します（{", ".join(saves)}）')
    return out

_PIP = re.compile(r'\bpip3?\s+install\b(.*)$')

def check_pip_quoting(cells) -> list[str]:
    "`pip install` の版の指定（`>=`、`<` など）が引用符の中にある。外にあるとシェルがリダイレクトと読み、指定が消える"
    out = []
    for i,src in code_cells(cells):
        for cmd in shell_cmds(parse(src)) if parse(src) else []:
            m = _PIP.search(cmd)
            if m and re.search(r'[<>]', re.sub(r'"[^"]*"|\'[^\']*\'', '', m.group(1))): out.append(f'cell {i}: 引用符の無い版の指定: {cmd.strip()}')
    return out

def check_generation(cells) -> list[str]:
    "生成はチャットテンプレートを通し、答えを文字数で切り出さない（`text[len(prompt):]`）"
    out = []
    for i,src in code_cells(cells):
        tree = parse(src)
        if tree is None: continue
        names = {call_name(c) for c in calls(tree)}
        if 'generate' in names and 'apply_chat_template' not in names: out.append(f'cell {i}: チャットテンプレートを使わずに generate します')
        texts = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and call_name(n.value) in ('decode', 'batch_decode')
                 for t in n.targets if isinstance(t, ast.Name)}   # 復号した文字列を持つ変数
        for n in ast.walk(tree):
            if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Slice) and n.slice.lower is not None:
                v = n.value
                if call_name(v) in ('decode', 'batch_decode') or isinstance(v, ast.Name) and v.id in texts:
                    out.append(f'cell {i}: 答えを文字数で切り出します（{ast.unparse(n)}）')
    return out

def check_lora_hardcoded(cells) -> list[str]:
    "LoRA の対象の層の名前を決め打ちしない（予備のモデルの系統で名前が違う）。`lora_config(model)` に選ばせる"
    out = []
    for i,src in code_cells(cells):
        for c in calls(parse(src)):
            for k in c.keywords:
                if k.arg == 'target_modules' and isinstance(k.value, (ast.List, ast.Tuple, ast.Set)):
                    out.append(f'cell {i}: LoRA の対象を決め打ちしています（{ast.unparse(k.value)}）')
    return out

def _lr_values(tree) -> list[tuple[str, float]]:
    out = []
    num = lambda v: isinstance(v, ast.Constant) and isinstance(v.value, (int, float)) and not isinstance(v.value, bool)
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and num(n.value):
            out += [(t.id, n.value.value) for t in n.targets if isinstance(t, ast.Name) and re.search(r'(^|_)(learning_rate|lr)$', t.id, re.I)]
        if isinstance(n, ast.Call):
            out += [(k.arg, k.value.value) for k in n.keywords if k.arg in ('learning_rate', 'lr') and num(k.value)]
        if isinstance(n, ast.Dict):
            out += [(k.value, v.value) for k,v in zip(n.keys, n.values) if isinstance(k, ast.Constant) and k.value in ('learning_rate', 'lr') and num(v)]
    return out

def check_learning_rate(cells) -> list[str]:
    f"学習率は LoRA に十分な大きさ（{LR_FLOOR:g} 以上）"
    return [f'cell {i}: 学習率 {name} = {v:g} は LoRA には小さすぎます（{LR_FLOOR:g} 以上に）'
            for i,src in code_cells(cells) if parse(src) for name,v in _lr_values(parse(src)) if v < LR_FLOOR]

def check_gpu_twins(cells) -> list[str]:
    "`#| gpu` のセルは出力が空で、直前のコードのセルが CPU で動く双子（gpu・eval: false・hide でない）"
    out, prev = [], None
    for i,c in enumerate(cells):
        if c['type'] != 'code': continue
        f = flags(c['source'])
        if 'gpu' in f:
            if c['outputs']: out.append(f'cell {i}: #| gpu のセルに出力があります（本物の GPU の実行で作ったものでなければ空に）')
            if prev is None or prev & {'gpu', 'eval: false', 'hide'}: out.append(f'cell {i}: #| gpu のセルの直前に CPU の双子のセルがありません')
        prev = f
    return out

def check_matplotlib_direct(cells) -> list[str]:
    "図はライブラリの関数（日本語フォントを設定し、ここで豆腐を検査したもの）だけで描く"
    out = []
    for i,src in code_cells(cells):
        tree = parse(src)
        for n in ast.walk(tree) if tree else []:
            mods = [a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ''] if isinstance(n, ast.ImportFrom) else []
            if any(m.split('.')[0] in ('matplotlib', 'seaborn') for m in mods): out.append(f'cell {i}: matplotlib を直接使っています')
    return out

# ---------------------------------------------------------------- 前のノートブックの故障を入れた小さなノートブック

SEED_IMPORT = '''import sys
try:
    from trl import DPOConfig, DPOTrainer
except ImportError:
    print("TRL が古いので終了します")
    sys.exit(1)'''

SEED_TRAINER = '''try:
    training_args = DPOConfig(output_dir="out", evaluation_strategy="steps", learning_rate=5e-7)
    trainer = DPOTrainer(model=model, args=training_args, processing_class=tokenizer, train_dataset=ds)
except Exception:
    training_args = TrainingArguments(output_dir="out", evaluation_strategy="steps")
    trainer = DPOTrainer(model=model, args=training_args, tokenizer=tokenizer, train_dataset=ds)'''

SEED_MODELS = '''for model_name in ["SakanaAI/TinySwallow-1.5B-Instruct", "rinna/japanese-gpt-neox-3.6b-instruction-sft"]:
    try:
        model = AutoModelForCausalLM.from_pretrained(model_name)
        break
    except Exception as e:
        continue
peft_config = LoraConfig(r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])'''

SEED_TRAIN_SAVE = [('code', '''try:
    trainer.train()
except Exception as e:
    print("学習でエラー:", e)'''), ('code', '''import shutil
trainer.save_model("./final_model")
shutil.make_archive("final_model", "zip", "./final_model")'''), ('code', '!zip -r final_model.zip ./final_model')]

SEED_GENERATE = '''prompt = "日本の首都はどこですか？"
inputs = tokenizer(prompt, return_tensors="pt")
outputs = model.generate(**inputs, max_new_tokens=100)
response = tokenizer.decode(outputs[0], skip_special_tokens=True)[len(prompt):]'''

BAD = dict(
    compiles=nb(('markdown', '# 学習'), ('code', '## 3. データの準備\nここではデータを読み込みます。サンプルを使う場合は次のセルを実行してください。')),
    import_exit=nb(('code', SEED_IMPORT)),
    removed_options=nb(('code', SEED_TRAINER)),
    retry_fallback=nb(('code', SEED_TRAINER), ('code', SEED_MODELS)),
    save_guarded=nb(*SEED_TRAIN_SAVE),
    pip_quoting=nb(('code', '!pip install -q torch>=2.1.0 transformers>=4.36.0 "trl<0.9"')),
    generation=nb(('code', SEED_GENERATE)),
    lora_hardcoded=nb(('code', SEED_MODELS)),
    learning_rate=nb(('code', 'CONFIG = {"learning_rate": 5e-7, "beta": 0.1}'), ('code', 'LEARNING_RATE = 5e-7  # @param {type:"number"}')),
    gpu_twins=nb(('markdown', 'GPU で学習'), ('code', '#| gpu\ntrainer.train()'), ('code', '#| gpu\nprint(torch.cuda.memory_allocated())')),
    matplotlib_direct=nb(('code', 'import matplotlib.pyplot as plt\nplt.title("学習曲線")')),
)
CHECKS = dict(compiles=check_compiles, import_exit=check_import_exit, removed_options=check_removed_options, retry_fallback=check_retry_fallback,
              save_guarded=check_save_guarded, pip_quoting=check_pip_quoting, generation=check_generation, lora_hardcoded=check_lora_hardcoded,
              learning_rate=check_learning_rate, gpu_twins=check_gpu_twins, matplotlib_direct=check_matplotlib_direct)

@pytest.fixture(scope='module')
def tutorial(): return read_nb(TUTORIAL)

@pytest.mark.parametrize('name', list(CHECKS))
def test_tutorial_passes(tutorial, name):
    problems = CHECKS[name](tutorial)
    assert problems == [], '\n'.join(problems)

@pytest.mark.parametrize('name', list(CHECKS))
def test_check_catches_seed_defect(name):
    "検査そのものが効くこと: 前のノートブックの故障を入れた小さなノートブックでは問題を見つける"
    assert CHECKS[name](BAD[name]), f'{name} の検査が、故障を入れたノートブックで何も見つけませんでした'

def test_seed_defects_found_in_detail():
    "故障ごとに、見つけるべきものを正確に見つける"
    assert len(check_retry_fallback(nb(('code', SEED_TRAINER)))) == 1
    assert any('黙って捨て' in p for p in check_retry_fallback(nb(('code', SEED_MODELS))))
    assert any('握りつぶし' in p for p in check_retry_fallback(nb(SEED_TRAIN_SAVE[0])))
    assert len(check_save_guarded(nb(*SEED_TRAIN_SAVE))) == 3            # save_model、make_archive、!zip
    guarded = nb(('code', 'res = train_dpo(recipe)'), ('code', 'assert (res.adapter_dir/"adapter_config.json").is_file()\nshutil.make_archive("a", "zip", res.adapter_dir)'))
    assert check_save_guarded(guarded) == []
    retrain = guarded + nb(('code', 'res = train_dpo(recipe)'), ('code', 'shutil.make_archive("b", "zip", res.adapter_dir)'))
    assert len(check_save_guarded(retrain)) == 1                       # 学習し直したら確かめ直す
    assert check_pip_quoting(nb(('code', 'if "google.colab" in sys.modules: !pip install -q "colab-dpo>=0.1"'))) == []
    assert len(check_pip_quoting(nb(('code', 'if IN_COLAB: !pip install -q peft>=0.9')))) == 1
    assert len(check_learning_rate(BAD['learning_rate'])) == 2
    assert check_generation(nb(('code', 'ids = tok.apply_chat_template(m, add_generation_prompt=True)\nout = model.generate(ids)\nans = tok.decode(out[0][len(ids):])'))) == []

# ---------------------------------------------------------------- チュートリアルの構成

def test_header_badge_install_and_settings(tutorial):
    text = '\n'.join(c['source'] for c in tutorial[:3])
    assert 'https://colab.research.google.com/github/colab-dpo/colab-dpo/blob/main/nbs/10_colab_dpo_training.ipynb' in text
    assert not any('default_exp' in c['source'] for c in tutorial), 'チュートリアルは何も export しない'
    install = [src for _,src in code_cells(tutorial) if 'pip install' in src]
    assert install and all('eval: false' in flags(s) and 'google.colab' in s for s in install)
    settings = [src for _,src in code_cells(tutorial) if '# @param' in src and 'LEARNING_RATE' in src]
    assert len(settings) == 1
    for k in ('MODEL', 'DATA_SOURCE', 'MAX_STEPS', 'BETA', 'LEARNING_RATE', 'MAX_LENGTH'):
        assert re.search(rf'^{k}\s*=.*#\s*@param', settings[0], re.M), f'設定のフォームに {k} がありません'

def test_one_switch(tutorial):
    "ミニモデルと本物を選ぶのは 1 か所（環境変数 COLAB_DPO_TUTORIAL と GPU の有無）"
    sw = [src for _,src in code_cells(tutorial) if 'COLAB_DPO_TUTORIAL' in src]
    assert len(sw) == 1 and 'TINY' in sw[0] and 'make_tiny_model' in sw[0] and "fixture_path('tinyswallow_tokenizer')" in sw[0]

def test_steps_and_folds(tutorial):
    code = '\n'.join(src for _,src in code_cells(tutorial))
    for f in ('env_report', 'load_preferences', 'load_sample', '.plot()', 'load_model', 'lora_config', 'plan_memory', 'dry_run=True',
              'train_dpo', 'plot_history', 'interpret_history', 'evaluate_run', 'compare_generations', 'merge_adapter', 'push_run',
              'find_checkpoints', 'explain_error'):
        assert f in code, f
    md = '\n'.join(c['source'] for c in tutorial if c['type'] == 'markdown')
    assert md.count('<details>') >= 2 and "resume='auto'" in md
    assert sum(c['type'] == 'markdown' for c in tutorial) >= sum(c['type'] == 'code' for c in tutorial) * 0.6  # 説明が十分にある
    ev = [src for _,src in code_cells(tutorial) if 'eval: false' in flags(src)]
    assert any('drive.mount' in s for s in ev) and any('push_run' in s for s in ev)

def test_settings_models_are_registered(tutorial):
    "フォームの候補と予備のモデルはすべて登録簿にある（＝下の LoRA の検査で、その系統の層の名前を確かめている）"
    from colab_dpo.loading import MODEL_REGISTRY, DEFAULT_CANDIDATES
    settings = next(src for _,src in code_cells(tutorial) if '# @param' in src and 'MODEL =' in src)
    m = re.search(r'^MODEL\s*=\s*("[^"]*").*#\s*@param\s*(\[.*?\])', settings, re.M)
    choices = [json.loads(m.group(1))] + json.loads(m.group(2))
    assert set(choices) | set(DEFAULT_CANDIDATES) <= set(MODEL_REGISTRY)

# ---------------------------------------------------------------- LoRA の対象と層の名前（登録簿のすべての系統）

def lora_mismatch(model, targets) -> list[str]:
    "LoRA の対象のうち、モデルのどの層の名前とも合わないもの"
    names = {n.rsplit('.', 1)[-1] for n,_ in model.named_modules()}
    return [t for t in targets if t not in names]

@pytest.fixture(scope='module')
def tiny_models(tmp_path_factory):
    "登録簿に現れるすべての系統のミニモデル"
    from colab_dpo.loading import MODEL_REGISTRY
    from colab_dpo.tiny import make_tiny_model, TINY_ARCHS
    from transformers import AutoModelForCausalLM
    archs = sorted({s.arch for s in MODEL_REGISTRY.values()})
    assert set(archs) <= set(TINY_ARCHS), f'ミニモデルを作れない系統が登録簿にあります: {set(archs) - set(TINY_ARCHS)}'
    d = tmp_path_factory.mktemp('tiny')
    return {a: AutoModelForCausalLM.from_pretrained(make_tiny_model(d/a, arch=a)) for a in archs}

def test_lora_targets_match_every_registry_arch(tiny_models):
    from colab_dpo.loading import lora_config
    from peft import get_peft_model
    for arch, model in tiny_models.items():
        cfg = lora_config(model)
        assert lora_mismatch(model, cfg.target_modules) == [], arch
        pm = get_peft_model(model, cfg)
        hit = {n.split('.lora_A.')[0].rsplit('.', 1)[-1] for n,p in pm.named_parameters() if p.requires_grad and '.lora_A.' in n}
        assert hit == set(cfg.target_modules), (arch, hit)     # どの対象にも実際に LoRA が差さっている
        pm.unload()

def test_lora_mismatch_catches_seed_targets(tiny_models):
    "前のノートブックの Qwen2 の名前を、予備の rinna（GPT-NeoX）に使うと一つも合わない"
    assert lora_mismatch(tiny_models['gpt_neox'], ['q_proj', 'k_proj', 'v_proj', 'o_proj']) == ['q_proj', 'k_proj', 'v_proj', 'o_proj']

# ---------------------------------------------------------------- 図の日本語

class _Logs(logging.Handler):
    def __init__(self): super().__init__(); self.msgs = []
    def emit(self, r): self.msgs.append(r.getMessage())

def missing_glyphs(fig) -> list[str]:
    "図を PNG に描くときの「フォントに文字がない」警告（warnings と logging の両方）"
    h = _Logs(); lg = logging.getLogger('matplotlib'); lg.addHandler(h)
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always'); fig.savefig(io.BytesIO(), format='png')
    finally: lg.removeHandler(h)
    return [m for m in [str(x.message) for x in w] + h.msgs if 'Glyph' in m or 'missing from font' in m]

def test_tutorial_figures_render_japanese(tutorial):
    "チュートリアルが描く図（データの長さ、学習の記録、学習前後の選好）に豆腐（□）が出ない"
    from colab_dpo.data import load_sample
    from colab_dpo.evaluation import plot_history, plot_preference, synthetic_history, PreferenceEval
    code = '\n'.join(src for _,src in code_cells(tutorial))
    assert 'pdata.plot()' in code and 'plot_history(' in code and 'evaluate_run(' in code   # evaluate_run は plot_history と plot_preference を描く
    pe = PreferenceEval([-40.0, -35.0, -50.0], [-45.0, -30.0, -60.0], [-39.0, -36.0, -48.0], [-47.0, -33.0, -64.0], [20, 18, 25], [22, 15, 30])
    for fig in (load_sample().plot(), plot_history(synthetic_history(30)), plot_preference(pe)): assert missing_glyphs(fig) == []

def test_missing_glyph_check_can_fail():
    "日本語の無いフォントで日本語を描けば、検査は警告を見つける"
    import matplotlib; matplotlib.use('Agg')
    from matplotlib.figure import Figure
    fig = Figure()
    fig.subplots().set_title('学習の記録', fontfamily='DejaVu Sans')
    assert missing_glyphs(fig)

# ---------------------------------------------------------------- 生成のチャットテンプレート

def test_generation_prompt_uses_chat_template():
    "チュートリアルの生成（compare_generations）が使うプロンプトは、チャットテンプレートで描いたもの"
    from colab_dpo.tiny import tiny_tokenizer
    from colab_dpo.evaluation import prompt_ids
    tok = tiny_tokenizer('qwen2')
    text = tok.decode(prompt_ids(tok, '日本の首都はどこですか？'))
    assert text.rstrip().endswith('<|im_start|>assistant') and '<|im_start|>user\n日本の首都はどこですか？<|im_end|>' in text

# ---------------------------------------------------------------- トレーニングガイド

def test_guide_generated_from_code():
    "ガイドの表はコード（DPORecipe の docments・PROFILES・MODEL_REGISTRY・トラブルのカタログ）から作る"
    g = read_nb(GUIDE)
    code = '\n'.join(src for _,src in code_cells(g))
    for f in ('docments', 'DPORecipe', 'PROFILES', 'MODEL_REGISTRY', 'troubleshooting_table', 'FORMATS'): assert f in code, f
    md = '\n'.join(c['source'] for c in g if c['type'] == 'markdown')
    for ref in ('2305.18290', 'huggingface.co/docs/trl', 'huggingface.co/docs/transformers', 'huggingface.co/docs/peft', 'huggingface.co/docs/bitsandbytes'):
        assert ref in md, ref
    assert check_compiles(g) == [] and check_pip_quoting(g) == [] and check_learning_rate(g) == []

def test_top_level_guide_points_to_pages():
    t = (ROOT/'COLAB_DPO_TRAINING_GUIDE.md').read_text(encoding='utf-8')
    for link in ('https://colab-dpo.github.io/colab-dpo/training_guide.html', 'nbs/11_training_guide.ipynb', 'nbs/10_colab_dpo_training.ipynb',
                 'https://colab.research.google.com/github/colab-dpo/colab-dpo/blob/main/nbs/10_colab_dpo_training.ipynb'):
        assert link in t, link

def test_top_level_guide_values_match_code():
    "COLAB_DPO_TRAINING_GUIDE.md の要点の表の値が、T4 のプロファイルとレシピの既定値と一致する（手書きの表がずれたら止まる）"
    from colab_dpo.training import DPORecipe, PROFILES
    t4, r = PROFILES['t4'], DPORecipe()
    rows = {l.split('|')[1].strip(): l.split('|')[2].strip() for l in (ROOT/'COLAB_DPO_TRAINING_GUIDE.md').read_text(encoding='utf-8').splitlines()
            if l.startswith('| ') and l.count('|') >= 4}
    assert rows['精度'] == t4['precision'] and rows['量子化'].startswith(t4['quantization'])
    assert rows['オプティマイザー'] == f"`{t4['optim']}`" and rows['`max_length`'] == str(t4['max_length'])
    assert rows['マイクロバッチ × 勾配蓄積'].startswith(f"{t4['per_device_train_batch_size']} × {t4['gradient_accumulation_steps']}")
    assert float(rows['学習率']) == r.learning_rate >= LR_FLOOR and float(rows['β']) == r.beta

def test_examples_readme_lists_files():
    "examples/README.md は examples/ にあるファイルをすべて説明する"
    t = (ROOT/'examples'/'README.md').read_text(encoding='utf-8')
    for p in (ROOT/'examples').iterdir():
        if p.name != 'README.md' and not p.name.startswith('.'): assert p.name in t, p.name
