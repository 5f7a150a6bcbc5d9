"""GPU ベンチマーク: TinySwallow-1.5B と同じ構造のランダム初期化モデルを 4bit NF4 + fp16（T4 と同じ設定）で DPO 学習し、
素の TRL の既定値（TRL のドキュメントどおりの書き方）と colab-dpo の T4 レシピ（`train_dpo`）を同じ実行の中で比べる。

測るもの: ピークの GPU メモリ（allocated / reserved）と学習トークン毎秒（TRL が記録する `num_tokens` ÷ `train_runtime`）、
読み込みから学習終了までの壁時計時間。各条件を --repeat 回（同じプロセスで、データセットのキャッシュは無効）測り中央値を出す。
Hub には接続しない: 構造は `config.json`（../shared/fixtures/tinyswallow_tokenizer/config.json）、トークナイザーは同じフォルダから読む。

    python bench/gpu.py --fixture DIR [--lengths 1024 512] [--steps 3] [--repeat 3] [--variants ...] [--out OUT_DIR]
    python bench/gpu.py --fixture DIR --tiny          # CPU で配線だけ確かめる（小さなモデル、fp32）
    python bench/gpu.py --phases eval multi oom       # issue 16: 評価（colab-dpo-eval の段階ごとの時間、生成の tokens/s の比、選んだ精度）と複数 GPU
    python bench/gpu.py --smoke                       # CPU で評価と 2 プロセス（gloo）の段階の配線だけを数十秒で確かめる
    python bench/gpu.py --phases tune selftest        # 探索の試行ごとの GPU メモリ（増えないこと）と、自己診断（t4 プロファイル）の時間と判定
    python bench/gpu.py --phases lr                   # issue 12: 学習率 5e-6 / 5e-5 / 5e-4 の報酬マージンの伸びと、アダプターを 16bit に足し込めるか

評価の段階（--phases eval）: 学習の代わりに乱数で初期化した LoRA アダプターを載せた run フォルダを作り、(1) `colab-dpo-eval` を別プロセスで
既定のまま走らせて（12 問 × 128 トークンを学習前後、保留 200 組を 1024 トークンで採点）全体と段階ごとの秒数・選んだ精度を読み、
(2) 同じプロセスで、以前の既定（4bit の基盤・バッチ 4）と新しい既定（空きに収まれば 16bit・バッチは空きから）の生成の tokens/s を比べ、
(3) 学習後の生成（アダプター有効）を、分けたままと `merged_adapter` で重みに足し込んだときとで比べる（足し込めたかのコードも残す）。
複数 GPU の段階（--phases multi）: GPU が 2 枚以上あれば `torchrun --nproc_per_node 2 colab-dpo-train --profile kaggle-2xt4` と
1 プロセスの `--profile t4`（同じ実効バッチ 8）の学習 tokens/s を比べる。GPU が 1 枚なら「未測定」と出す（CPU の --smoke は gloo で配線だけ）。

GPU が無い環境の数値は bench/README.md で「未測定」のままにする（推定値を測定値として書かない）。
"""
import argparse, contextlib, json, os, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def build_model(fixture:Path, out:Path, tiny:bool, seed:int=0) -> Path:
    "fixture の config.json と同じ構造（--tiny なら縮小版）のランダムモデルとトークナイザーを保存する"
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    if (out/'config.json').exists(): return out
    d = json.loads((fixture/'config.json').read_text())
    if tiny: d.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, max_window_layers=2, num_attention_heads=4, num_key_value_heads=2)
    cfg = AutoConfig.for_model(**{k:v for k,v in d.items() if not k.startswith('_')})
    torch.manual_seed(seed)
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    with torch.device(dev): model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float16 if dev=='cuda' else torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(fixture).save_pretrained(out)
    return out

def build_data(tok_dir:Path, out:Path, max_length:int, rows:int) -> Path:
    "同梱サンプルの日本語を継ぎ足して、プロンプト約 1/4・応答約 0.7 × max_length トークンのペアを作る"
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tok_dir)
    src = [json.loads(l) for l in open(ROOT/'colab_dpo'/'assets'/'sample_dpo_dataset.jsonl', encoding='utf-8')]
    def fill(key, i, n):
        ids, j = [], i
        while len(ids) < n: ids += tok(src[j % len(src)][key] + '\n', add_special_tokens=False)['input_ids']; j += 1
        return tok.decode(ids[:n]).replace('\ufffd', '')   # トークンの途中で切れた文字（U+FFFD）は消す（colab-dpo の検証はその行を飛ばすため）
    with open(out, 'w', encoding='utf-8') as f:
        for i in range(rows):
            r = dict(prompt=f"{i}: " + fill('prompt', i, max_length//4), chosen=fill('chosen', i, int(max_length*.7)),
                     rejected=fill('rejected', i+7, int(max_length*.7)))
            f.write(json.dumps(r, ensure_ascii=False) + '\n')
    return out

def _num_tokens(hist): return max([h['num_tokens'] for h in hist if 'num_tokens' in h] or [0])
def _runtime(hist): return next((h['train_runtime'] for h in reversed(hist) if 'train_runtime' in h), None)

def run_plain(model_dir, data, L, steps, out, gpu, fp32_fix=False):
    "TRL のドキュメントどおりの素の書き方（QLoRA の例）"
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer
    dt = torch.float16 if gpu else torch.float32
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dt, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dt))
    ds = load_dataset('json', data_files=str(data), split='train')
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=1, gradient_accumulation_steps=8, max_steps=steps,
                     max_length=L, fp16=gpu, bf16=False, use_cpu=not gpu, logging_steps=1, save_strategy='no', report_to='none')
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules='all-linear', task_type='CAUSAL_LM')
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)
    if fp32_fix:  # TRL issue #4901 の回避策: 学習する重みを fp32 に戻す
        for p in trainer.model.parameters():
            if p.requires_grad: p.data = p.data.float()
    trainer.train()
    return trainer.state.log_history

COLAB_VARIANTS = {   # colab-dpo の T4 レシピ（fp16、4bit、paged_adamw_8bit、勾配チェックポイント）の 3 通りの使い方
    'colab_mb1': dict(per_device_train_batch_size=1, gradient_accumulation_steps=8, auto_plan=False),  # 課題の指定どおり 1 × 8
    'colab_mb2': dict(per_device_train_batch_size=2, gradient_accumulation_steps=4, auto_plan=False),  # 同じ実効バッチ 8 を 2 × 4 で
    'colab_t4':  dict(auto_plan=True, vram_gb=15.0),                                                   # T4 の 15 GB 予算でメモリ計画に任せる（既定）
}

def run_colab(model_dir, data, L, steps, out, gpu, variant='colab_t4'):
    "colab-dpo の T4 レシピ（`train_dpo`）。GPU では fp16 を強制して T4 と同じ条件にする"
    from colab_dpo.training import DPORecipe, train_dpo
    recipe = DPORecipe.from_profile('t4' if gpu else 'cpu', models=[str(model_dir)], data=str(data), max_steps=steps,
                                    max_length=L, max_prompt_length=L//2, output_dir=str(out), eval_ratio=0.0,
                                    save_steps=10**6, resume=None, logging_steps=1, dry_run=False, max_rows=None,
                                    quantization='4bit', precision='fp16' if gpu else 'fp32', **COLAB_VARIANTS[variant])
    res = train_dpo(recipe)
    s = res.run_card['recipe']
    return res.log_history, dict(micro_batch=s['per_device_train_batch_size'], grad_accum=s['gradient_accumulation_steps'],
                                 gradient_checkpointing=s['gradient_checkpointing'], precompute_ref=s['precompute_ref_log_probs'],
                                 optim=s['optim'], planned_peak_gb=(res.plan.peak_gb if res.plan else None))

def worker(a):
    "1 つの max_length について、全条件を --repeat 回、回ごとに順番を入れ替えて測り、1 回ごとに JSON を 1 行出す"
    import gc, torch, datasets
    datasets.disable_caching()  # TRL の参照 log-prob の事前計算がキャッシュで省かれないように
    gpu = torch.cuda.is_available()
    variants = a.variant.split(',')
    for rep in range(a.repeat):
        for v in (variants if rep % 2 == 0 else variants[::-1]):
            gc.collect()
            if gpu: torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()/1e9 if gpu else None
            out = Path(tempfile.mkdtemp(prefix=f'{v}_{a.max_length}_'))
            t0, err, used = time.perf_counter(), None, {}
            try:
                if v.startswith('colab'): hist, used = run_colab(a.model, a.data, a.max_length, a.steps, out, gpu, v)
                else: hist = run_plain(a.model, a.data, a.max_length, a.steps, out, gpu, fp32_fix=v=='plain_fp32fix')
            except Exception as e:  # 失敗も結果として記録する（素の TRL が fp16 + QLoRA で落ちるかどうかも測る対象）
                hist, err = [], f"{type(e).__name__}: {str(e)[:300]}"
            wall = time.perf_counter() - t0
            r = dict(variant=v, max_length=a.max_length, rep=rep, wall_s=wall, error=err, settings=used,
                     num_tokens=_num_tokens(hist), train_runtime=_runtime(hist), start_alloc_gb=start)
            if r['train_runtime']: r['tokens_per_s'] = r['num_tokens'] / r['train_runtime']
            if gpu:
                r.update(peak_alloc_gb=torch.cuda.max_memory_allocated()/1e9, peak_reserved_gb=torch.cuda.max_memory_reserved()/1e9)
                r['peak_run_gb'] = r['peak_alloc_gb'] - start   # この回の増分（前の回が残したメモリを除く）
            del hist
            gc.collect()
            if gpu:   # 回の後に残った GPU メモリ（漏れ）と、残った大きなテンソル
                torch.cuda.empty_cache(); r['end_alloc_gb'] = torch.cuda.memory_allocated()/1e9
                if r['end_alloc_gb'] - start > 0.2:
                    big = [o for o in gc.get_objects() if torch.is_tensor(o) and o.is_cuda and o.numel()*o.element_size() > 5e7]
                    r['leaked'] = [dict(shape=list(t.shape), dtype=str(t.dtype), referrers=[type(x).__name__ for x in gc.get_referrers(t)][:6]) for t in big[:6]]
            print('RESULT ' + json.dumps(r), flush=True)

def make_run(model_dir:Path, out:Path, L:int, pairs:int, gpu:bool, seed:int=0) -> Path:
    "学習の代わりに、乱数で初期化した LoRA アダプター・run_card・保留データを持つ run フォルダを作る（評価の速さだけを測るため）"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from peft import LoraConfig, get_peft_model
    if (out/'run_card.json').exists(): return out
    tok = AutoTokenizer.from_pretrained(model_dir); torch.manual_seed(seed)
    m = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16 if gpu else torch.float32),
                       LoraConfig(r=16, lora_alpha=32, target_modules='all-linear', init_lora_weights=False, task_type='CAUSAL_LM'))
    m.save_pretrained(out/'adapter'); tok.save_pretrained(out/'adapter'); del m
    build_data(model_dir, out/'held_out.jsonl', L, rows=pairs)
    card = dict(base_model=str(model_dir), eval_data='held_out.jsonl', recipe=dict(beta=0.1, quantization='4bit', max_length=L))
    (out/'run_card.json').write_text(json.dumps(card, ensure_ascii=False))
    return out

_PHASES = dict(load=r'\[eval\] loaded in ([\d.]+) s', score=r'\[eval\] scored (\d+) held-out pairs .* in ([\d.]+) s \(([\d.]+) tokens/s\)',
               generate=r'\[eval\] generated answers to (\d+) prompts .* in ([\d.]+) s \(([\d.]+) new tokens/s', total=r'\[eval\] total ([\d.]+) s')

def eval_phase(a, model_dir:Path, work:Path, gpu:bool) -> dict:
    "colab-dpo-eval を既定のまま別プロセスで走らせて段階ごとの秒数を読み、同じプロセスで以前の既定と生成の tokens/s を比べる"
    import re, gc, torch
    from colab_dpo.evaluation import load_run, load_prompt_set, prompt_ids, generate_answers, merged_adapter
    run = make_run(model_dir, work/'eval_run', a.eval_length, a.eval_pairs, gpu)
    cmd = [_exe('colab-dpo-eval'), '--run-dir', str(run), '--max-new-tokens', str(a.new_tokens),
           '--n-prompts', str(a.prompts), '--max-pairs', str(a.eval_pairs)]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'COLAB_DPO_LANG': 'en'})
    r = dict(cli_wall_s=time.perf_counter() - t, cli_rc=p.returncode, cli_stderr_tail=p.stderr[-800:] if p.returncode else None,
             progress_bars=('scoring (before)' in p.stderr, 'generating (after)' in p.stderr))
    for k,pat in _PHASES.items():
        m = re.search(pat, p.stdout)
        if m: r[f'{k}_s'] = float(m.group(1 if k in ('load', 'total') else 2))
        if m and k in ('score', 'generate'): r[f'{k}_tokens_per_s'] = float(m.group(3))
    rep = run/'eval'/'report.json'
    if rep.exists():
        j = json.loads(rep.read_text())
        r['precision'] = (j.get('load') or {}).get('message'); r['merge'] = j['generations']['summary'].get('merge')
    r['cli_stdout'] = p.stdout[-3000:]   # 段階の行（準備・読み込み・採点・生成・レポート・合計）
    prompts = load_prompt_set('ja', n=a.prompts)
    for q, bs, sides in (('4bit' if gpu else None, 4, [('old_4bit_batch4', 'off')]),   # 読み込みは精度ごとに 1 回
                         ('auto', None, [('new_default', 'off'), ('after_separate', 'on'), ('after_merged', 'merged')])):
        model, tok, card = load_run(run, q)
        ids = [prompt_ids(tok, x) for x in prompts]
        for name, side in sides:
            if gpu: torch.cuda.synchronize()
            t = time.perf_counter()
            ctx = model.disable_adapter() if side == 'off' else merged_adapter(model) if side == 'merged' else contextlib.nullcontext()
            with ctx as info: out = generate_answers(model, tok, ids, a.new_tokens, bs)
            if side == 'merged': r['after_merge_code'] = info['code']
            if gpu: torch.cuda.synchronize()
            dt = time.perf_counter() - t
            r[name] = dict(gen_s=dt, new_tokens=sum(map(len, out)), tokens_per_s=sum(map(len, out))/dt, load=card['eval_load'].get('code'))
        del model, out; gc.collect()
        if gpu: torch.cuda.empty_cache()
    r['gen_speed_ratio'] = r['new_default']['tokens_per_s'] / r['old_4bit_batch4']['tokens_per_s']
    r['after_merged_ratio'] = r['after_merged']['tokens_per_s'] / r['after_separate']['tokens_per_s']   # 学習後の生成: 足し込み / 分けたまま
    return r

def _train_tps(run:Path) -> float|None:
    h = json.loads((run/'log_history.json').read_text()) if (run/'log_history.json').exists() else []
    rt = _runtime(h)
    return _num_tokens(h)/rt if rt else None

def multi_phase(a, model_dir:Path, work:Path, gpu:bool) -> dict:
    "GPU 2 枚（CPU の --smoke では gloo の 2 プロセス）で kaggle-2xt4 のデータ並列と、1 プロセスの t4 を同じ実効バッチで比べる"
    import torch
    n = torch.cuda.device_count() if gpu else 2
    if n < 2: return dict(skipped=f'{n} GPU: 2 枚以上のときだけ測る（未測定）')
    L = a.lengths[0]
    data = build_data(model_dir, work/f'data_multi_{L}.jsonl', L, rows=a.steps*8*2)
    exe = Path(sys.executable).parent
    common = ['--model', str(model_dir), '--data', str(data), '--max-steps', str(a.steps), '--max-length', str(L),
              '--max-prompt-length', str(L//2), '--eval-ratio', '0', '--save-steps', '1000000', '--resume', 'none', '--logging-steps', '1']
    if not gpu: common += ['--quantization', 'none', '--precision', 'fp32', '--optim', 'adamw_torch']
    env = {**os.environ, 'TQDM_DISABLE': '1'}
    if not gpu: env.update(CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    out = {}
    for name, pre, prof in (('single_t4', [], 't4'), ('ddp_kaggle_2xt4', [str(exe/'torchrun'), '--nproc_per_node', '2', '--no-python'], 'kaggle-2xt4')):
        run = work/f'multi_{name}'
        t = time.perf_counter()
        p = subprocess.run(pre + [str(exe/'colab-dpo-train'), '--profile', prof, '--output-dir', str(run), *common], capture_output=True, text=True, env=env)
        card = json.loads((run/'run_card.json').read_text()) if (run/'run_card.json').exists() else {}
        rc = card.get('recipe', {})
        out[name] = dict(rc=p.returncode, wall_s=time.perf_counter() - t, train_tokens_per_s=_train_tps(run), world_size=card.get('world_size'),
                         micro_batch=rc.get('per_device_train_batch_size'), grad_accum=rc.get('gradient_accumulation_steps'),
                         peak_gpu_gb=(card.get('memory') or {}).get('gpu_peak_gb'), error=p.stderr[-600:] if p.returncode else None)
    s, d = out['single_t4'].get('train_tokens_per_s'), out['ddp_kaggle_2xt4'].get('train_tokens_per_s')
    if s and d: out['ddp_speed_ratio'] = d/s
    return out

def oom_worker(a):
    "1 条件だけ学習して RESULT を 1 行出す。GPU では --cap-gb でこのプロセスが使えるメモリを制限する（OOM を起こすため）"
    import torch
    from colab_dpo.training import DPORecipe, train_dpo, InjectFault
    gpu = torch.cuda.is_available()
    if gpu and a.cap_gb: torch.cuda.set_per_process_memory_fraction(a.cap_gb*2**30 / torch.cuda.get_device_properties(0).total_memory)
    mb = int(a.oom_worker)
    recipe = DPORecipe.from_profile('t4' if gpu else 'cpu', models=[str(a.model)], data=str(a.data), max_steps=a.steps, max_length=a.max_length,
                                    max_prompt_length=a.max_length//2, output_dir=tempfile.mkdtemp(prefix=f'oom{mb}_'), eval_ratio=0.0, save_steps=1,
                                    resume=None, logging_steps=1, dry_run=False, max_rows=None, auto_plan=False, per_device_train_batch_size=mb,
                                    gradient_accumulation_steps=8//mb, oom_retries=2, precompute_ref_log_probs=False,
                                    **(dict(quantization='4bit', precision='fp16') if gpu else dict(quantization=None, precision='fp32')))
    t = time.perf_counter()
    res = train_dpo(recipe, callbacks=[] if gpu or mb != 8 else [InjectFault(oom_at_step=1)])   # CPU では OOM を注入して配線だけ確かめる
    r = dict(micro_batch=mb, wall_s=time.perf_counter() - t, retries=res.run_card.get('oom_retries'), step=res.metrics.get('step'),
             final_micro=res.run_card['recipe']['per_device_train_batch_size'])
    if gpu: r['peak_gb'] = torch.cuda.max_memory_allocated()/1e9
    print('RESULT ' + json.dumps(r), flush=True)

def oom_phase(a, model_dir:Path, work:Path, gpu:bool) -> dict:
    "3 GB の上限でマイクロバッチ 8 から始めて OOM から回復した学習の時間 ÷ 最初からマイクロバッチ 2 の学習の時間（読み込みを含む、別プロセス）"
    L = a.lengths[0]
    data = build_data(model_dir, work/f'data_oom_{L}.jsonl', L, rows=a.steps*8)
    out = {}
    for mb in (2, 8):
        cmd = [sys.executable, __file__, '--oom-worker', str(mb), '--model', str(model_dir), '--data', str(data), '--max-length', str(L),
               '--steps', str(a.steps), '--cap-gb', str(a.cap_gb)]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'TQDM_DISABLE': '1'})
        line = next((l for l in p.stdout.splitlines() if l.startswith('RESULT ')), None)
        out[f'micro_{mb}'] = dict(json.loads(line[7:]) if line else {}, process_wall_s=time.perf_counter() - t, rc=p.returncode,
                                  error=p.stderr[-600:] if p.returncode else None)
    a2, a8 = out['micro_2'].get('wall_s'), out['micro_8'].get('wall_s')
    if a2 and a8: out['recovery_time_ratio'] = a8/a2
    return out

def tune_phase(a, model_dir:Path, work:Path, gpu:bool) -> dict:
    "colab-dpo-tune の 3 試行（枝刈りなし）を走らせ、試行ごとの GPU メモリ（試行の後に解放してからの確保量）が増えないことを確かめる"
    import yaml
    L = a.tune_length
    data = build_data(model_dir, work/f'data_tune_{L}.jsonl', L, rows=a.tune_rows)
    r = dict(models=[str(model_dir)], data=str(data), max_length=L, max_prompt_length=L//2, eval_ratio=0.25, save_steps=10**6,
             logging_steps=1, resume=None, output_dir=str(work/'tune_run'), max_rows=None)
    r.update(dict(quantization='4bit', precision='fp16') if gpu else dict(quantization=None, precision='fp32', optim='adamw_torch'))
    cfg = work/'tune_recipe.yaml'; cfg.write_text(yaml.safe_dump(r, allow_unicode=True))
    d = work/'tune'
    cmd = [_exe('colab-dpo-tune'), '--config', str(cfg), '--profile', 't4' if gpu else 'cpu', '--trials', str(a.tune_trials),
           '--trial-steps', str(a.tune_steps), '--evals', '2', '--pruner', 'none', '--output-dir', str(d), '--overwrite']
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'TQDM_DISABLE': '1', 'COLAB_DPO_LANG': 'en'})
    out = dict(cli_wall_s=time.perf_counter() - t, rc=p.returncode, error=p.stderr[-800:] if p.returncode else None)
    st = json.loads((d/'study.json').read_text()) if (d/'study.json').exists() else {}
    out['trials'] = [{k: x.get(k) for k in ('number', 'state', 'value', 'steps', 'wall_s', 'gpu_allocated_gb', 'rss_gb', 'params')}
                     for x in st.get('trials', [])]
    g = [x['gpu_allocated_gb'] for x in out['trials'] if x.get('gpu_allocated_gb') is not None]
    m = [x['rss_gb'] for x in out['trials'] if x.get('rss_gb') is not None]
    if len(g) >= 2: out['gpu_allocated_growth_gb'] = g[-1] - g[0]
    if len(m) >= 2: out['rss_growth_gb'] = m[-1] - m[0]
    return out

def selftest_phase(a, model_dir:Path, work:Path, gpu:bool) -> dict:
    "colab-dpo-selftest をそのプロファイルで走らせ、判定・効果・段階ごとの秒数を読む（Colab で環境を確かめる数分の目安）"
    d = work/'selftest'
    if d.exists(): shutil.rmtree(d)
    prof = a.selftest_profile or ('t4' if gpu else 'cpu')
    t = time.perf_counter()
    p = subprocess.run([_exe('colab-dpo-selftest'), '--profile', prof, '--json', '--output-dir', str(d)], capture_output=True, text=True,
                       env={**os.environ, 'TQDM_DISABLE': '1', 'COLAB_DPO_LANG': 'en'})
    out = dict(profile=prof, cli_wall_s=time.perf_counter() - t, rc=p.returncode, error=p.stderr[-800:] if p.returncode not in (0, 1) else None)
    try: r = json.loads(p.stdout)
    except ValueError: return dict(out, stdout_tail=p.stdout[-800:])
    return dict(out, passed=r['passed'], recipe=r['recipe'], train=r['train'], seconds=r['seconds'], verdict=r['verdict'].get('code'),
                preference={k: r['preference'][k] for k in ('n', 'logp_accuracy_before', 'logp_accuracy_before_ci', 'logp_accuracy_after',
                                                            'logp_accuracy_after_ci', 'reward_accuracy', 'change_p_value')},
                style={k: r['style'].get(k) for k in ('n', 'before', 'before_ci', 'after', 'after_ci', 'change_p_value')})

def _exe(name:str) -> str:
    "このインタープリターの隣のコンソールスクリプト（無ければ PATH のもの）"
    e = Path(sys.executable).parent/name
    return str(e) if e.exists() else (shutil.which(name) or name)

def _med(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None and not r.get('error')]
    return statistics.median(v) if v else None

def adapter_merge_stats(run_dir:Path) -> dict:
    "学習したアダプターを fp16・bf16 の基盤に `merged_adapter` で足し込んだときの ‖ΔW‖/‖W‖、差分の誤差、選ばれたコード"
    import gc, torch
    from colab_dpo.evaluation import base_model_of
    from colab_dpo.scoring import merged_adapter
    from transformers import AutoModelForCausalLM
    from peft import PeftModel
    out, dev = {}, 'cuda' if torch.cuda.is_available() else 'cpu'
    for dt in (torch.float16, torch.bfloat16):
        m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model_of(run_dir), dtype=dt).to(dev), run_dir/'adapter').eval()
        with merged_adapter(m) as info: pass
        out[str(dt).split('.')[-1]] = {k: info[k] for k in ('delta_over_w', 'error', 'merged', 'code')}
        del m; gc.collect()
        if torch.cuda.is_available(): torch.cuda.empty_cache()
    return out

def lr_phase(a, model_dir:Path, work:Path, gpu:bool) -> dict:
    "issue 12: 1.5B の形（乱数の重み）を T4 レシピで学習率ごとに学習し、ステップごとの報酬マージンの伸びと、できたアダプターを 16bit に足し込めるかを記録する"
    import gc, torch
    from colab_dpo.training import DPORecipe, train_dpo
    data = build_data(model_dir, work/f'lr_data_{a.lr_length}.jsonl', a.lr_length, rows=max(16, 8*a.lr_steps))
    res = {}
    for lr in a.lrs:
        run = work/f'lr_{lr:g}'; shutil.rmtree(run, ignore_errors=True)
        recipe = DPORecipe.from_profile('t4' if gpu else 'cpu', models=[str(model_dir)], data=str(data), max_steps=a.lr_steps,
                                        max_length=a.lr_length, max_prompt_length=a.lr_length//2, output_dir=str(run), eval_ratio=0.0,
                                        save_steps=10**6, resume=None, logging_steps=1, dry_run=False, max_rows=None, learning_rate=lr,
                                        **(dict(quantization='4bit', precision='fp16') if gpu else dict(quantization=None, precision='fp32')))
        t = time.perf_counter(); r = train_dpo(recipe); wall = time.perf_counter() - t
        h = [x for x in r.log_history if 'rewards/margins' in x]
        res[f'{lr:g}'] = dict(wall_s=wall, steps=len(h), margins=[x['rewards/margins'] for x in h],
                              accuracies=[x.get('rewards/accuracies') for x in h], logps_chosen=[x.get('logps/chosen') for x in h],
                              margin_per_step=(h[-1]['rewards/margins'] - h[0]['rewards/margins'])/max(1, len(h) - 1) if h else None,
                              merge=adapter_merge_stats(run))
        del r; gc.collect()
        if gpu: torch.cuda.empty_cache()
    return res

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--fixture', default=str(ROOT.parent/'shared'/'fixtures'/'tinyswallow_tokenizer'))
    ap.add_argument('--lengths', type=int, nargs='+', default=[1024, 512])
    ap.add_argument('--steps', type=int, default=3); ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--variants', nargs='+', default=['plain_fp32fix', *COLAB_VARIANTS],
                    help="'plain'（TRL のドキュメントどおり。fp16 + QLoRA では TRL #4901 で落ちる）、'plain_fp32fix'（その回避策つき）、" + '、'.join(COLAB_VARIANTS))
    ap.add_argument('--tiny', action='store_true'); ap.add_argument('--out', default=None)
    ap.add_argument('--phases', nargs='+', default=['train'], choices=['train', 'eval', 'multi', 'oom', 'tune', 'selftest', 'lr'],
                    help='測る段階（issue 16 の表は eval multi oom。tune は試行ごとの GPU メモリ、selftest は自己診断の時間と判定、'
                         'lr は学習率ごとの報酬マージンの伸びと、学習したアダプターを 16bit に足し込めるか）')
    ap.add_argument('--lrs', type=float, nargs='+', default=[5e-6, 5e-5, 5e-4]); ap.add_argument('--lr-steps', type=int, default=16)
    ap.add_argument('--lr-length', type=int, default=512)
    ap.add_argument('--cap-gb', type=float, default=3.0, help='oom の段階で 1 プロセスが使える GPU メモリ（GiB）'); ap.add_argument('--oom-worker')
    ap.add_argument('--smoke', action='store_true', help='CPU で評価と 2 プロセスの段階の配線だけを確かめる（--tiny、少ない問題数・トークン数）')
    ap.add_argument('--prompts', type=int, default=12); ap.add_argument('--new-tokens', type=int, default=128)
    ap.add_argument('--eval-pairs', type=int, default=200); ap.add_argument('--eval-length', type=int, default=1024)
    ap.add_argument('--workdir', default=None)
    ap.add_argument('--tune-trials', type=int, default=3); ap.add_argument('--tune-steps', type=int, default=4)
    ap.add_argument('--tune-length', type=int, default=512); ap.add_argument('--tune-rows', type=int, default=48)
    ap.add_argument('--selftest-profile', default=None, help='自己診断のプロファイル（既定: GPU なら t4、無ければ cpu）')
    ap.add_argument('--worker', dest='variant'); ap.add_argument('--model'); ap.add_argument('--data'); ap.add_argument('--max-length', type=int)
    a = ap.parse_args()
    if a.variant: return worker(a)
    if a.oom_worker: return oom_worker(a)
    if a.smoke: a.tiny, a.phases, a.prompts, a.new_tokens, a.eval_pairs, a.eval_length, a.steps, a.lengths = True, ['eval', 'multi', 'oom'], 2, 8, 4, 128, 1, [128]
    import torch
    work = Path(a.workdir or tempfile.mkdtemp(prefix='gpu_bench_')); work.mkdir(parents=True, exist_ok=True)
    out = Path(a.out) if a.out else work; out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter(); model = build_model(Path(a.fixture), work/'model', a.tiny)
    print(f"model ready in {time.perf_counter()-t:.1f}s: {model}", flush=True)
    results, partial = [], open(out/'gpu_bench_runs.jsonl', 'a')   # 途中で時間切れになっても、測れた回は残る
    gpu, extra = torch.cuda.is_available(), {}
    for ph, fn in (('eval', eval_phase), ('multi', multi_phase), ('oom', oom_phase), ('tune', tune_phase), ('selftest', selftest_phase),
                   ('lr', lr_phase)):
        if ph not in a.phases: continue
        t = time.perf_counter(); extra[ph] = r = fn(a, model, work, gpu)
        partial.write(json.dumps(dict(phase=ph, **r), default=str) + '\n'); partial.flush()
        print(f"phase {ph} ({time.perf_counter()-t:.0f}s): {json.dumps(r, ensure_ascii=False, default=str)}", flush=True)
    for L in (a.lengths if 'train' in a.phases else []):
        data = build_data(model, work/f'data_{L}.jsonl', L, rows=a.steps*8)
        cmd = [sys.executable, __file__, '--worker', ','.join(a.variants), '--model', str(model), '--data', str(data), '--max-length', str(L),
               '--steps', str(a.steps), '--repeat', str(a.repeat)]
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in p.stdout:
            if not line.startswith('RESULT '): continue
            r = json.loads(line[7:]); results.append(r); partial.write(json.dumps(r) + '\n'); partial.flush()
            print(f"  L={L} rep {r['rep']} {r['variant']:14s} wall {r['wall_s']:5.1f}s  {r.get('tokens_per_s') or 0:6.0f} tok/s  "
                  f"peak {r.get('peak_run_gb') or 0:.2f} GB this run (start {r.get('start_alloc_gb') or 0:.2f}, end {r.get('end_alloc_gb') or 0:.2f})  "
                  f"{r['settings']}  {(r['error'] or '')[:120]}  {r.get('leaked') or ''}", flush=True)
        err = p.stderr.read(); p.wait()
        if p.returncode: print(f"worker L={L} exit {p.returncode}: {err[-1500:]}", flush=True)
        print(f"L={L}: {time.perf_counter()-t:.0f}s", flush=True)
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'
    import transformers, trl, peft
    try: import bitsandbytes as bnb; bv = bnb.__version__
    except ImportError: bv = None
    meta = dict(device=dev, date=time.strftime('%Y-%m-%d'), torch=torch.__version__, transformers=transformers.__version__,
                trl=trl.__version__, peft=peft.__version__, bitsandbytes=bv, steps=a.steps, repeat=a.repeat, tiny=a.tiny)
    print(json.dumps(meta))
    f = lambda x, p=2: '-' if x is None else f"{x:.{p}f}"
    print("peak alloc GB = this run's peak allocated minus what was allocated when it started (median)")
    print(f"\n{'max_len':>7} {'variant':>14} {'peak alloc GB':>13} {'peak resv GB':>12} {'train tok/s':>11} {'wall s':>7}  settings / error")
    summary = []
    for L in a.lengths:
        rows = {}
        for v in ['plain', 'plain_fp32fix', *COLAB_VARIANTS]:
            rs = [r for r in results if r['variant']==v and r['max_length']==L]
            if not rs: continue
            s = dict(variant=v, max_length=L, n=len([r for r in rs if not r.get('error')]), peak_alloc_gb=_med(rs, 'peak_run_gb'),
                     peak_reserved_gb=_med(rs, 'peak_reserved_gb'), tokens_per_s=_med(rs, 'tokens_per_s'), wall_s=_med(rs, 'wall_s'),
                     settings=rs[0].get('settings'), error=next((r['error'] for r in rs if r.get('error')), None))
            rows[v] = s; summary.append(s)
            print(f"{L:>7} {v:>14} {f(s['peak_alloc_gb']):>13} {f(s['peak_reserved_gb']):>12} {f(s['tokens_per_s'],0):>11} {f(s['wall_s'],1):>7}  {s['error'] or s['settings'] or ''}")
        base = rows.get('plain') if (rows.get('plain') or {}).get('tokens_per_s') else rows.get('plain_fp32fix')
        for v in COLAB_VARIANTS:
            ours = rows.get(v)
            if not (base and ours and base.get('tokens_per_s') and ours.get('tokens_per_s')): continue
            ratio = dict(max_length=L, variant=v, baseline=base['variant'], speed_ratio=ours['tokens_per_s']/base['tokens_per_s'],
                         peak_alloc_ratio=ours['peak_alloc_gb']/base['peak_alloc_gb'] if base.get('peak_alloc_gb') else None)
            summary.append(ratio)
            print(f"{L:>7} {'ratio':>14}  {v} / {base['variant']}: tokens/s ×{ratio['speed_ratio']:.2f}, "
                  f"peak allocated ×{ratio['peak_alloc_ratio'] or float('nan'):.2f} ({f(ours['peak_alloc_gb'])} GB)")
    json.dump(dict(meta=meta, results=results, summary=summary, **extra), open(out/'gpu_bench.json', 'w'), indent=1, default=str)
    if 'eval' in extra:
        e = extra['eval']; o, n = e.get('old_4bit_batch4', {}), e.get('new_default', {})
        print(f"\neval: colab-dpo-eval wall {e['cli_wall_s']:.1f}s (rc {e['cli_rc']}; load {e.get('load_s', float('nan')):.1f}s, "
              f"score {e.get('score_s', float('nan')):.1f}s, generate {e.get('generate_s', float('nan')):.1f}s), progress bars {e['progress_bars']}\n"
              f"      precision: {e.get('precision')}\n"
              f"      generation {a.prompts} prompts x {a.new_tokens} tokens (adapter off): old 4bit/batch 4 {o.get('tokens_per_s', 0):.0f} tok/s, "
              f"new default {n.get('tokens_per_s', 0):.0f} tok/s -> ratio x{e['gen_speed_ratio']:.2f}\n"
              f"      after training (adapter on): separate {e['after_separate']['tokens_per_s']:.0f} tok/s, merged "
              f"{e['after_merged']['tokens_per_s']:.0f} tok/s ({e.get('after_merge_code')}) -> ratio x{e['after_merged_ratio']:.2f}")
    if 'multi' in extra: print(f"multi: {json.dumps(extra['multi'], ensure_ascii=False, default=str)}")
    for k in ('oom', 'tune', 'selftest'):
        if k in extra: print(f"{k}: {json.dumps(extra[k], ensure_ascii=False, default=str)}")

if __name__ == '__main__': main()
