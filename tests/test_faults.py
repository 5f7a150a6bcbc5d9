"""故障の一覧（issue 14）: どの故障も、決まった終了コードとエラーコードで止まり、トレースバックを出さず、前の結果を消さない。

多くは CLI の関数をこのプロセスの中で呼ぶ（import は一度だけ）。Ctrl-C と同時実行だけは本物のプロセスで確かめる。
`CASES` の表は docs（nbs/05_troubleshoot.ipynb）の表の元でもある: `python tests/test_faults.py --table` で Markdown を出す。
"""
import errno, json, os, shutil, signal, socket, subprocess, sys, time, traceback, warnings
from pathlib import Path
import pytest
from conftest import cli_exe

os.environ.setdefault('TQDM_DISABLE', '1'); os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
BIN = Path(sys.executable).parent
SMALL = ['--max-rows', '8', '--eval-ratio', '0', '--max-length', '128', '--max-prompt-length', '64', '--batch-size', '2',
         '--grad-accum', '1', '--save-steps', '1', '--logging-steps', '1', '--quantization', 'none', '--learning-rate', '5e-4']

# ---------------------------------------------------------------- helpers
def cli(fn, *args, env=None):
    "CLI の関数を argv 付きで呼び、(終了コード, stdout+stderr) を返す。捕まらなかった例外は 'Traceback' 付きの文字列になる"
    import io, contextlib
    old_argv, old_env = sys.argv, dict(os.environ)
    sys.argv = [fn.__name__, *map(str, args)]; os.environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            from fastcore.script import _run_cli   # call_parse が sys.argv を読むのはスクリプトとして起動したときだけなので、その入口を直接使う
            try: code = _run_cli(fn.__wrapped__, False) or 0
            except SystemExit as e: code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException: code = None; err.write(traceback.format_exc())
        warned = [f"{getattr(x.message, 'code', '')}] {x.message}" for x in w if getattr(x.message, 'code', '')]
    finally: sys.argv = old_argv; os.environ.clear(); os.environ.update(old_env)
    return code, out.getvalue() + err.getvalue() + '\n' + '\n'.join(f'[warn [{c}' for c in warned)

def train(*args, env=None):
    from colab_dpo.training import train_cli
    return cli(train_cli, *args, env=env)

def snapshot(folder:Path) -> dict:
    "フォルダの中身（パス → (大きさ, 更新時刻)）: 前の結果が消えていないことを確かめる"
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob('*')) if p.is_file()} if folder.exists() else {}

def kept(before:dict, folder:Path) -> bool:
    now = snapshot(folder)
    return all(k in now and now[k] == v for k,v in before.items() if not k.endswith('.lock'))

def check(code, text, want_code:int, want_err:str|None):
    assert 'Traceback' not in text, text[-3000:]
    assert code == want_code, (code, text[-3000:])
    if want_err: assert f'[{want_err}]' in text, text[-3000:]

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    from colab_dpo.tiny import make_tiny_model
    root = tmp_path_factory.mktemp('tiny')
    return dict(a=make_tiny_model(root/'a', arch='qwen2', seed=0), b=make_tiny_model(root/'b', arch='qwen2', seed=1))

@pytest.fixture(scope='module')
def done(tmp_path_factory, tiny):
    "2 ステップで終わった実行（各テストはこれを写して使う）"
    d = tmp_path_factory.mktemp('done')/'run'
    code, text = train('--model', tiny['a'], *SMALL, '--max-steps', '2', '--output-dir', d)
    check(code, text, 0, None)
    return d

def base(tiny, out, steps=2): return ['--model', tiny['a'], *SMALL, '--max-steps', str(steps), '--output-dir', out]

def copy_done(done, tmp_path):
    d = tmp_path/'run'; shutil.copytree(done, d); return d

# ---------------------------------------------------------------- cases
# (id, 説明, 期待する終了コード, 期待するエラー/警告コード)
CASES = []
def case(id_, what, exit_code, err):
    CASES.append(dict(id=id_, what=what, exit=exit_code, code=err)); return id_

RECIPE = [  # (引数, 期待するコード) — どれもモデルを読む前に止まる
    (case('lr_nan', '--learning-rate nan', 2, 'train.not_finite'), ['--learning-rate', 'nan']),
    (case('lr_inf', '--learning-rate inf', 2, 'train.not_finite'), ['--learning-rate', 'inf']),
    (case('beta_nan', '--beta nan', 2, 'train.not_finite'), ['--beta', 'nan']),
    (case('beta_neg_inf', '--beta -inf', 2, 'train.not_finite'), ['--beta=-inf']),
    (case('optim_unknown', '--optim adamw_torch_fast（無いオプティマイザー）', 2, 'train.unknown_name'), ['--optim', 'adamw_torch_fast']),
    (case('profile_unknown', '--profile t5', 2, 'train.unknown_profile'), ['--profile', 't5']),
    (case('max_steps_zero', '--max-steps 0', 2, 'train.bad_value'), ['--max-steps', '0']),
    (case('prompt_len', '--max-prompt-length が --max-length 以上', 2, 'train.bad_value'), ['--max-length', '64', '--max-prompt-length', '64']),
    (case('config_missing', '--config に無いファイル', 2, 'train.config_missing'), ['--config', 'no/such/recipe.yaml']),
]

def _case(cid): return next(x for x in CASES if x['id'] == cid)

@pytest.mark.parametrize('cid,args', RECIPE, ids=[i for i,_ in RECIPE])
def test_recipe_values(tmp_path, cid, args):
    c = _case(cid)
    code, text = train('--model', str(tmp_path/'never_loaded'), '--output-dir', tmp_path/'out', *args)
    check(code, text, c['exit'], c['code'])
    assert not (tmp_path/'out'/'adapter').exists()

YAML = [
    (case('yaml_scheduler', 'YAML の lr_scheduler_type: cosine_warm（無いスケジューラー）', 2, 'train.unknown_name'), 'lr_scheduler_type: cosine_warm\n'),
    (case('yaml_profile', 'YAML の profile: t5', 2, 'train.unknown_profile'), 'profile: t5\n'),
    (case('yaml_field', 'YAML の知らない項目 lerning_rate', 2, 'train.unknown_field'), 'lerning_rate: 1e-4\n'),
    (case('yaml_broken', '壊れた YAML', 2, 'train.config_parse'), 'models: [a, b\n'),
    (case('yaml_lr_nan', 'YAML の learning_rate: .nan', 2, 'train.not_finite'), 'learning_rate: .nan\n'),
]

@pytest.mark.parametrize('cid,text', YAML, ids=[i for i,_ in YAML])
def test_recipe_files(tmp_path, cid, text):
    c = _case(cid)
    (tmp_path/'r.yaml').write_text(text)
    code, out = train('--config', tmp_path/'r.yaml', '--output-dir', tmp_path/'out')
    check(code, out, c['exit'], c['code'])

def test_config_profile_precedence(tmp_path):
    "優先順: プロファイル < レシピファイル < フラグ"
    case('precedence', '--config と --profile の優先順（プロファイル < ファイル < フラグ）', 0, None)
    from colab_dpo.training import cli_recipe
    (tmp_path/'r.yaml').write_text('profile: t4\nprecision: bf16\nmax_length: 256\nmax_prompt_length: 128\n')
    r = cli_recipe(str(tmp_path/'r.yaml'), max_length=200)
    assert (r.quantization, r.optim, r.precision, r.max_length, r.profile) == ('4bit', 'paged_adamw_8bit', 'bf16', 200, 't4')
    r = cli_recipe(str(tmp_path/'r.yaml'), profile='cpu')   # コマンドラインのプロファイルがファイルの profile に勝つ
    assert (r.quantization, r.optim, r.precision, r.profile) == (None, 'adamw_torch', 'bf16', 'cpu')

def test_cpu_profile_is_not_a_dry_run():
    case('cpu_profile', "from_profile('cpu', models=[...]) は本物を CPU で（ドライランではない）", 0, None)
    from colab_dpo.training import DPORecipe
    r = DPORecipe.from_profile('cpu', models=['my/model'])
    assert (r.dry_run, r.quantization, r.precision, r.models) == (False, None, 'fp32', ['my/model'])

# ---- file system: checked before the model is loaded
def _fs_file(tmp):   (tmp/'f').write_text('x'); return ['--output-dir', tmp/'f']
def _fs_under(tmp):  (tmp/'f').write_text('x'); return ['--output-dir', tmp/'f'/'run']
def _fs_ckfile(tmp): (tmp/'f').write_text('x'); return ['--output-dir', tmp/'out', '--checkpoint-dir', tmp/'f']
FS = [(case('out_is_file', 'output_dir がファイル', 2, 'ckpt.not_a_folder'), _fs_file),
      (case('out_under_file', 'output_dir の親がファイル', 2, 'ckpt.not_a_folder'), _fs_under),
      (case('ckpt_is_file', 'checkpoint_dir がファイル', 2, 'ckpt.not_a_folder'), _fs_ckfile)]

@pytest.mark.parametrize('cid,make', FS, ids=[i for i,_ in FS])
def test_fs_paths(tmp_path, cid, make):
    c = _case(cid)
    code, text = train('--model', tmp_path/'never_loaded', *make(tmp_path))
    check(code, text, c['exit'], c['code'])
    assert (tmp_path/'f').read_text() == 'x'

@pytest.mark.skipif(os.name != 'posix' or os.geteuid() == 0, reason='root は権限ビットを無視する')
def test_fs_read_only(tmp_path):
    case('read_only', '読み取り専用の output_dir（権限ビット）', 2, 'ckpt.not_writable')
    ro = tmp_path/'ro'; ro.mkdir(); ro.chmod(0o500)
    try: code, text = train('--model', tmp_path/'x', '--output-dir', ro/'run')
    finally: ro.chmod(0o700)
    check(code, text, 2, 'ckpt.not_writable')

WRITE = [(case('write_eacces', '書き込みの試しで EACCES（権限がない）', 2, 'ckpt.not_writable'), errno.EACCES),
         (case('write_erofs', '書き込みの試しで EROFS（読み取り専用のマウント）', 2, 'ckpt.not_writable'), errno.EROFS),
         (case('write_enospc', '書き込みの試しで ENOSPC（ディスクが満杯）', 2, 'ckpt.disk_full'), errno.ENOSPC)]

@pytest.mark.parametrize('cid,err', WRITE, ids=[i for i,_ in WRITE])
def test_fs_write_errors(tmp_path, monkeypatch, cid, err):
    "書けない・読み取り専用のマウント・満杯のディスク（書き込みの試しで起きる OSError を注入）"
    real = Path.write_bytes
    def boom(self, data):
        if self.name.startswith('.colab_dpo_probe'): raise OSError(err, os.strerror(err))
        return real(self, data)
    monkeypatch.setattr(Path, 'write_bytes', boom)
    code, text = train('--model', tmp_path/'x', '--output-dir', tmp_path/'out')
    check(code, text, 2, _case(cid)['code'])

def test_fs_free_space_estimate(tmp_path, tiny, monkeypatch):
    case('free_space', '空きが見積もり（LoRA の重み＋Adam × 残す数）より少ない', 2, 'ckpt.disk_full')
    import colab_dpo.checkpoints as ck
    monkeypatch.setattr(ck.shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    code, text = train(*base(tiny, tmp_path/'out'))
    check(code, text, 2, 'ckpt.disk_full')

def test_demo_output_is_file(tmp_path):
    case('demo_out_file', 'colab-dpo-demo --output-dir がファイル', 2, 'ckpt.not_a_folder')
    from colab_dpo.demo import demo_cli
    (tmp_path/'f').write_text('x')
    check(*cli(demo_cli, '--output-dir', tmp_path/'f'), 2, 'ckpt.not_a_folder')

# ---- hub / network
def test_push_offline(tmp_path, tiny):
    case('push_offline', '--push-to-hub をオフラインで（学習の前に止まる）', 2, 'train.push_offline')
    code, text = train(*base(tiny, tmp_path/'out'), '--push-to-hub', 'me/x', env={'HF_HUB_OFFLINE': '1'})
    check(code, text, 2, 'train.push_offline')
    assert not (tmp_path/'out'/'adapter').exists()

def test_push_no_token(tmp_path, tiny, monkeypatch):
    case('push_no_token', '--push-to-hub でログインしていない', 2, 'train.push_no_token')
    import colab_dpo.training as T, huggingface_hub
    monkeypatch.setattr(T, '_hub_problem', lambda: None); monkeypatch.setattr(huggingface_hub, 'get_token', lambda: None)
    check(*train(*base(tiny, tmp_path/'out'), '--push-to-hub', 'me/x'), 2, 'train.push_no_token')

def test_dry_run_offline_needs_tokenizer(tmp_path):
    case('dry_run_offline', 'オフラインで --config examples/t4_recipe.yaml --dry-run（Hub の ID だけ）', 2, 'train.dry_run_no_tokenizer')
    root = Path(__file__).resolve().parents[1]
    t0 = time.time()
    code, text = train('--config', root/'examples'/'t4_recipe.yaml', '--dry-run', '--output-dir', tmp_path/'out')
    check(code, text, 2, 'train.dry_run_no_tokenizer')
    assert '--tokenizer' in text

def test_offline_hub_model(tmp_path):
    case('offline_model', 'オフラインで Hub の ID のモデル（本番）→ 理由は offline（「見つかりません」ではない）', 1, 'load.all_failed')
    code, text = train('--model', 'nobody/no-such-model', *SMALL, '--max-steps', '1', '--output-dir', tmp_path/'out')
    assert 'Traceback' not in text and code not in (0, None), text[-2000:]
    assert '[load.all_failed]' in text and '[offline]' in text and '[not_found]' not in text, text[-2000:]

def test_bnb_import_is_quiet():
    case('bnb_noise', 'bitsandbytes の import で "Failed to load CPU gemm_4bit_forward" が出ない', 0, None)
    r = subprocess.run([sys.executable, '-c', 'import colab_dpo.compat, bitsandbytes'], capture_output=True, text=True)
    assert r.returncode == 0 and 'gemm_4bit_forward' not in r.stdout + r.stderr, r.stderr

# ---- run folder ownership
def test_same_recipe_is_complete(tmp_path, tiny, done):
    case('complete', '終わった実行に同じレシピ → 「終わっています」、学習し直さない', 0, None)
    d = copy_done(done, tmp_path); before = snapshot(d)
    code, text = train(*base(tiny, d), '--resume', 'auto')
    check(code, text, 0, None)
    assert '終わっています' in text or 'already finished' in text
    assert kept(before, d) and snapshot(d) == before

DIFF = [(case('other_lr', '終わった実行に別の学習率', 2, 'ckpt.fingerprint_mismatch'), ['--learning-rate', '1e-3']),
        (case('other_seed', '終わった実行に別のシード', 2, 'ckpt.fingerprint_mismatch'), ['--seed', '7']),
        (case('other_model', '終わった実行に同じ形の別のモデル', 2, 'ckpt.fingerprint_mismatch'), 'model_b'),
        (case('other_data', '終わった実行に別のデータ', 2, 'ckpt.fingerprint_mismatch'), 'data'),
        (case('other_resume_none', '別のレシピで --resume none', 2, 'ckpt.fingerprint_mismatch'), ['--beta', '0.3', '--resume', 'none'])]

@pytest.mark.parametrize('cid,extra', DIFF, ids=[i for i,_ in DIFF])
def test_other_recipe_refused(tmp_path, tiny, done, cid, extra):
    d = copy_done(done, tmp_path); before = snapshot(d)
    args = base(tiny, d)
    if extra == 'model_b': args[1] = tiny['b']; extra = []
    if extra == 'data':
        from colab_dpo.data import sample_path
        p = tmp_path/'other.jsonl'; p.write_text(''.join(sample_path().read_text(encoding='utf-8').splitlines(keepends=True)[:12]), encoding='utf-8')
        extra = ['--data', p]
    code, text = train(*args, *extra)
    check(code, text, 2, 'ckpt.fingerprint_mismatch')
    assert '--overwrite' in text and kept(before, d)

def test_resume_none_into_foreign_folder(tmp_path, tiny):
    case('foreign_folder', '--resume none で、指紋の無い前の結果（adapter/）があるフォルダ', 2, 'ckpt.folder_in_use')
    d = tmp_path/'run'; (d/'adapter').mkdir(parents=True); (d/'adapter'/'mine.txt').write_text('大事')
    check(*train(*base(tiny, d), '--resume', 'none'), 2, 'ckpt.folder_in_use')
    assert (d/'adapter'/'mine.txt').read_text() == '大事'

def test_overwrite(tmp_path, tiny, done):
    case('overwrite', '別のレシピで --overwrite → 消して最初から', 0, 'ckpt.overwrite')
    d = copy_done(done, tmp_path)
    code, text = train(*base(tiny, d), '--learning-rate', '1e-3', '--overwrite')
    check(code, text, 0, 'ckpt.overwrite')
    assert json.loads((d/'run_card.json').read_text())['recipe']['learning_rate'] == 1e-3

def test_more_steps_extends(tmp_path, tiny, done):
    case('extend', '終わった実行に大きな max_steps → 続きから延長し「再開します」と言う', 0, None)
    d = copy_done(done, tmp_path)
    code, text = train(*base(tiny, d, steps=3), '--resume', 'auto')
    check(code, text, 0, None)
    assert 'checkpoint-2 から再開します' in text or 'Resuming from checkpoint-2' in text
    card = json.loads((d/'run_card.json').read_text())
    assert card['metrics']['step'] == 3 and Path(card['resumed_from']).name == 'checkpoint-2'

# ---- locks
def _lock(d, pid, host=None):
    d.mkdir(parents=True, exist_ok=True)
    (d/'.colab_dpo.lock').write_text(json.dumps(dict(pid=pid, host=host or socket.gethostname(), started='2026-01-01T00:00:00')))

def test_lock_live(tmp_path, tiny):
    case('lock_live', '同じフォルダで別の学習が実行中（生きている pid のロック）', 1, 'ckpt.locked')
    p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        _lock(tmp_path/'run', p.pid)
        check(*train(*base(tiny, tmp_path/'run')), 1, 'ckpt.locked')
        assert not (tmp_path/'run'/'adapter').exists() and (tmp_path/'run'/'.colab_dpo.lock').exists()
    finally: p.kill(); p.wait()

def test_lock_other_host(tmp_path, tiny):
    case('lock_host', '別のホスト（Drive を共有する別ランタイム）のロック', 1, 'ckpt.locked')
    _lock(tmp_path/'run', 1, host='another-runtime')
    check(*train(*base(tiny, tmp_path/'run')), 1, 'ckpt.locked')

def test_lock_stale(tmp_path, tiny):
    case('lock_stale', '持ち主のプロセスがもう無いロック → 警告して引き継ぐ', 0, 'ckpt.stale_lock')
    p = subprocess.Popen([sys.executable, '-c', 'pass']); p.wait()
    _lock(tmp_path/'run', p.pid)
    code, text = train(*base(tiny, tmp_path/'run'))
    check(code, text, 0, 'ckpt.stale_lock')
    assert not (tmp_path/'run'/'.colab_dpo.lock').exists() and (tmp_path/'run'/'adapter').is_dir()

# ---- damaged checkpoints: the latest one is skipped with a warning naming the file, the previous one is used
def _damage(p:Path): b = p.read_bytes(); p.write_bytes(b[:len(b)//2] + bytes(len(b) - len(b)//2))
BAD = [(case('bad_rng', '最新の checkpoint の rng_state.pth が壊れている', 0, 'train.incomplete_checkpoint'), 'rng_state.pth'),
       (case('bad_optimizer', '最新の checkpoint の optimizer.pt が壊れている', 0, 'train.incomplete_checkpoint'), 'optimizer.pt'),
       (case('bad_scheduler', '最新の checkpoint の scheduler.pt が壊れている', 0, 'train.incomplete_checkpoint'), 'scheduler.pt'),
       (case('bad_state', '最新の checkpoint の trainer_state.json が途中で切れている', 0, 'train.incomplete_checkpoint'), 'trainer_state.json')]

@pytest.mark.parametrize('cid,fname', BAD, ids=[i for i,_ in BAD])
def test_damaged_checkpoint(tmp_path, tiny, done, cid, fname):
    d = copy_done(done, tmp_path)
    f = d/'checkpoints'/'checkpoint-2'/fname
    if f.suffix == '.json': f.write_text(f.read_text()[:20])
    else: _damage(f)
    code, text = train(*base(tiny, d, steps=3), '--resume', 'auto')
    check(code, text, 0, 'train.incomplete_checkpoint')
    assert fname in text and 'checkpoint-1 から再開します' in text
    assert json.loads((d/'run_card.json').read_text())['metrics']['step'] == 3

def test_killed_before_adapter_save(tmp_path, tiny, done):
    case('kill_before_save', '最後の checkpoint の後、アダプター保存の前に切れた → 再実行でカードの step・epoch・loss が正しい', 0, None)
    d = copy_done(done, tmp_path)
    ref = json.loads((d/'run_card.json').read_text())['metrics']
    for f in ('adapter', 'run_card.json', 'run_card.md', 'log_history.json'):
        (shutil.rmtree if (d/f).is_dir() else os.remove)(d/f)
    st = json.loads((d/'run_state.json').read_text()); st['status'] = 'running'
    for f in (d/'run_state.json', d/'checkpoints'/'run_state.json'): f.write_text(json.dumps(st))
    code, text = train(*base(tiny, d), '--resume', 'auto')
    check(code, text, 0, None)
    m = json.loads((d/'run_card.json').read_text())['metrics']
    assert (m['step'], m['epoch']) == (ref['step'], ref['epoch']) and m['train_loss'] == pytest.approx(ref['train_loss'], rel=1e-6)

def test_corrupt_card_on_complete_run(tmp_path, tiny, done):
    case('corrupt_card_rerun', '終わった実行の run_card.json が壊れている → 再実行で書き直す', 0, None)
    d = copy_done(done, tmp_path); (d/'run_card.json').write_text('{"metrics": ')
    check(*train(*base(tiny, d), '--resume', 'auto'), 0, None)
    assert json.loads((d/'run_card.json').read_text())['metrics']['step'] == 2

# ---- dry run results are marked and cannot be merged or pushed
@pytest.fixture(scope='module')
def dry(tmp_path_factory, tiny):
    from colab_dpo.training import train_dpo, DPORecipe
    d = tmp_path_factory.mktemp('dry')/'run'
    return train_dpo(DPORecipe(models=[str(tiny['a'])], dry_run=True, output_dir=str(d)))

def test_dry_run_is_marked(dry):
    case('dry_marked', 'ドライランの結果は要約でそう言う', 0, None)
    assert 'ドライラン' in repr(dry) or 'dry-run' in repr(dry)

def test_dry_run_not_merged(tmp_path, tiny, dry):
    case('dry_merge', 'ドライランの結果を統合しようとする', None, 'train.dry_run_result')
    from colab_dpo.training import merge_adapter
    from colab_dpo.core import ConfigError
    with pytest.raises(ConfigError) as e: merge_adapter(dry.adapter_dir, tiny['a'], tmp_path/'m')
    assert e.value.code == 'train.dry_run_result' and not (tmp_path/'m').exists()

def test_dry_run_not_pushed(dry):
    case('dry_push', 'ドライランの結果をアップロードしようとする', None, 'train.dry_run_result')
    from colab_dpo.training import push_run
    from colab_dpo.core import ConfigError
    calls = []
    class Api:
        def __getattr__(self, n): return lambda *a, **k: calls.append(n)
    with pytest.raises(ConfigError) as e: push_run(dry.run_dir, 'me/x', api=Api())
    assert e.value.code == 'train.dry_run_result' and calls == []

# ---- eval faults
def _eval(*args):
    from colab_dpo.evaluation import eval_cli
    return cli(eval_cli, *args)

def test_eval_max_new_tokens_zero(tmp_path, done):
    case('eval_tokens0', 'colab-dpo-eval --max-new-tokens 0', 2, 'ckpt.bad_arg')
    check(*_eval('--run-dir', done, '--max-new-tokens', '0'), 2, 'ckpt.bad_arg')

def test_eval_truncated_adapter(tmp_path, done):
    case('eval_truncated', 'colab-dpo-eval でアダプターの重みが途中で切れている', 2, 'ckpt.adapter_damaged')
    d = copy_done(done, tmp_path); w = d/'adapter'/'adapter_model.safetensors'; w.write_bytes(w.read_bytes()[:-100])
    check(*_eval('--run-dir', d), 2, 'ckpt.adapter_damaged')

def test_eval_deleted_adapter(tmp_path, done):
    case('eval_deleted', 'colab-dpo-eval でアダプターの重みが消えている', 2, 'ckpt.adapter_damaged')
    d = copy_done(done, tmp_path); (d/'adapter'/'adapter_model.safetensors').unlink()
    check(*_eval('--run-dir', d), 2, 'ckpt.adapter_damaged')

def test_eval_corrupt_card(tmp_path, done):
    case('eval_card', 'colab-dpo-eval で run_card.json が壊れている', 2, 'ckpt.card_damaged')
    d = copy_done(done, tmp_path); (d/'run_card.json').write_text('{"model": ')
    check(*_eval('--run-dir', d), 2, 'ckpt.card_damaged')

def test_eval_out_dir_is_file(tmp_path, done):
    case('eval_out_file', 'colab-dpo-eval --out-dir がファイル', 2, 'ckpt.not_a_folder')
    (tmp_path/'f').write_text('x')
    check(*_eval('--run-dir', done, '--out-dir', tmp_path/'f'), 2, 'ckpt.not_a_folder')

# ---- exact resume: kill in epoch 2 with micro-batch 2 and length grouping on → bit-identical adapter
def test_exact_resume_epoch2_grouped(tmp_path, tiny):
    case('exact_resume', '2 エポック目で切れて再開（マイクロバッチ 2、長さでまとめる）→ アダプターがビット単位で同じ', 0, None)
    import torch
    from safetensors.torch import load_file
    from colab_dpo.training import train_dpo, DPORecipe
    r = DPORecipe(models=[str(tiny['a'])], quantization=None, max_rows=8, eval_ratio=0.0, max_length=128, max_prompt_length=64,
                  per_device_train_batch_size=2, gradient_accumulation_steps=1, group_by_length=True, num_train_epochs=2,
                  save_steps=1, logging_steps=1, learning_rate=5e-4, lr_scheduler_type='constant', warmup_ratio=0.0, gradient_checkpointing=False)
    full = train_dpo(r, output_dir=str(tmp_path/'full'))
    from colab_dpo.training import _Callback
    class Cut(_Callback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 6: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): train_dpo(r, output_dir=str(tmp_path/'cut'), callbacks=[Cut()])
    again = train_dpo(r, output_dir=str(tmp_path/'cut'))
    assert Path(again.run_card['resumed_from']).name == 'checkpoint-6' and full.metrics['epoch'] == 2
    A, B = load_file(full.adapter_dir/'adapter_model.safetensors'), load_file(again.adapter_dir/'adapter_model.safetensors')
    assert A.keys() == B.keys() and all(torch.equal(A[k], B[k]) for k in A)

# ---- real processes: Ctrl-C and a concurrent second run

@pytest.mark.skipif(os.name != 'posix', reason='SIGINT が要る')
def test_sigint_then_resume(tmp_path, tiny):
    case('sigint', 'Ctrl-C（SIGINT）→ 「ステップ N で中断しました … checkpoint-M から再開できます」、終了コード 130', 130, None)
    case('concurrent', '実行中のフォルダに二つ目の学習', 1, 'ckpt.locked')
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore'}
    out = tmp_path/'run'
    long = 100_000   # 信号を送る前に学習が終わらないように
    cmd = [cli_exe('colab-dpo-train'), *map(str, base(tiny, out, steps=long))]
    # 端末で Ctrl-C を押したときと同じく SIGINT を有効にして起動する（CI がバックグラウンドのシェルから走ると SIGINT が無視の設定で
    # 引き継がれ、Python は KeyboardInterrupt の処理を入れない）
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while time.time() - t0 < 300 and p.poll() is None and not (out/'checkpoints'/'checkpoint-2'/'trainer_state.json').exists(): time.sleep(0.1)
    assert p.poll() is None, p.communicate()[1][-2000:]
    code, text = train(*base(tiny, out, steps=long))          # 二つ目は止まる
    check(code, text, 1, 'ckpt.locked')
    p.send_signal(signal.SIGINT)
    so, se = p.communicate(timeout=120)
    assert p.returncode == 130, se[-3000:]
    assert 'Traceback' not in se and 'で中断しました' in se and 'checkpoint-' in se, se[-3000:]
    assert not (out/'.colab_dpo.lock').exists()
    code, text = train(*base(tiny, out, steps=3))                  # 同じコマンド（ここでは短くして）で続きから
    check(code, text, 0, None)
    assert 'から再開します' in text

def test_lora_config_without_targets(tiny):
    "target_modules の無い LoraConfig でも、読み込みモジュールの型ごとの表で対象を埋める（古い PEFT が qwen2 を知らなくても動く）"
    case('lora_no_targets', 'make_dpo_trainer に target_modules の無い LoraConfig', 0, None)
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from colab_dpo.compat import make_dpo_trainer
    from colab_dpo.data import load_sample
    tok = AutoTokenizer.from_pretrained(tiny['a']); model = AutoModelForCausalLM.from_pretrained(tiny['a'])
    cfg = LoraConfig(r=4, lora_alpha=8, task_type='CAUSAL_LM')
    assert cfg.target_modules is None
    ds = load_sample(tokenizer=tok, max_length=128).dataset.select(range(4))
    tr = make_dpo_trainer(model, tok, ds, peft_config=cfg, max_length=128, max_prompt_length=64, max_steps=1, report_to='none')
    names = {n.split('.lora_A')[0].rsplit('.', 1)[-1] for n,_ in tr.model.named_parameters() if 'lora_A' in n}
    assert {'q_proj', 'v_proj', 'down_proj'} <= names and cfg.target_modules is None

@pytest.fixture(scope='module')
def pickle_model(tiny, tmp_path_factory):
    import torch
    from safetensors.torch import load_file
    d = tmp_path_factory.mktemp('pk')/'m'; shutil.copytree(tiny['a'], d)
    torch.save(load_file(d/'model.safetensors'), d/'pytorch_model.bin'); (d/'model.safetensors').unlink()
    return d

def test_pickle_only_warns(pickle_model):
    case('pickle_warn', 'pickle（pytorch_model.bin）だけのモデルのフォルダ → 警告して読む', 0, 'load.pickle_weights')
    from colab_dpo.loading import load_model
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        load_model(str(pickle_model), quantization=None)
    assert 'load.pickle_weights' in [getattr(x.message, 'code', '') for x in w]

def test_pickle_refused(pickle_model):
    case('pickle_refused', 'safetensors_only=True で pickle だけのフォルダ', None, 'load.all_failed')
    from colab_dpo.loading import load_model
    from colab_dpo.core import ModelLoadError
    with pytest.raises(ModelLoadError) as e: load_model(str(pickle_model), quantization=None, safetensors_only=True)
    assert e.value.code == 'load.all_failed' and '[pickle_refused]' in str(e.value)


def test_real_run_after_dry_run(tmp_path, tiny, dry):
    case('after_dry', '同じ output_dir で、ドライランの後に本番 → ドライランの結果だけ警告して置き換える', 0, 'ckpt.replace_dry_run')
    d = tmp_path/'run'; shutil.copytree(dry.run_dir, d)
    code, text = train(*base(tiny, d))
    check(code, text, 0, 'ckpt.replace_dry_run')
    assert json.loads((d/'run_card.json').read_text())['model']['dry_run'] is False


def table() -> str:
    "docs の表（Markdown）"
    rows = ['| 故障 | 終了コード | コード |', '|---|---|---|']
    rows += [f"| {c['what']} | {'例外' if c['exit'] is None else c['exit']} | {('`'+c['code']+'`') if c['code'] else '—'} |" for c in CASES]
    return '\n'.join(rows)

if __name__ == '__main__' and '--table' in sys.argv:
    import ast   # 関数の中で登録するケースも表に入れる（case(...) の呼び出しを構文木から読む）
    for node in ast.walk(ast.parse(Path(__file__).read_text(encoding='utf-8'))):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'case' and all(isinstance(x, ast.Constant) for x in node.args):
            cid, what, ex, err = (x.value for x in node.args)
            if not any(c['id'] == cid for c in CASES): case(cid, what, ex, err)
    print(table())
