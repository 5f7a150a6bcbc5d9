"""GPU ベンチマーク: TinySwallow-1.5B と同じ構造のランダム初期化モデルを 4bit NF4 + fp16（T4 と同じ設定）で DPO 学習し、
素の TRL の既定値（TRL のドキュメントどおりの書き方）と colab-dpo の T4 レシピ（`train_dpo`）を同じ実行の中で比べる。

測るもの: ピークの GPU メモリ（allocated / reserved）と学習トークン毎秒（TRL が記録する `num_tokens` ÷ `train_runtime`）、
読み込みから学習終了までの壁時計時間。各条件を --repeat 回（同じプロセスで、データセットのキャッシュは無効）測り中央値を出す。
Hub には接続しない: 構造は `config.json`（../shared/fixtures/tinyswallow_tokenizer/config.json）、トークナイザーは同じフォルダから読む。

    python bench/gpu.py --fixture DIR [--lengths 1024 512] [--steps 3] [--repeat 3] [--variants ...] [--out OUT_DIR]
    python bench/gpu.py --fixture DIR --tiny          # CPU で配線だけ確かめる（小さなモデル、fp32）

GPU が無い環境の数値は bench/README.md で「未測定」のままにする（推定値を測定値として書かない）。
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
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

def _med(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None and not r.get('error')]
    return statistics.median(v) if v else None

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--fixture', default=str(ROOT.parent/'shared'/'fixtures'/'tinyswallow_tokenizer'))
    ap.add_argument('--lengths', type=int, nargs='+', default=[1024, 512])
    ap.add_argument('--steps', type=int, default=3); ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--variants', nargs='+', default=['plain_fp32fix', *COLAB_VARIANTS],
                    help="'plain'（TRL のドキュメントどおり。fp16 + QLoRA では TRL #4901 で落ちる）、'plain_fp32fix'（その回避策つき）、" + '、'.join(COLAB_VARIANTS))
    ap.add_argument('--tiny', action='store_true'); ap.add_argument('--out', default=None)
    ap.add_argument('--workdir', default=None)
    ap.add_argument('--worker', dest='variant'); ap.add_argument('--model'); ap.add_argument('--data'); ap.add_argument('--max-length', type=int)
    a = ap.parse_args()
    if a.variant: return worker(a)
    import torch
    work = Path(a.workdir or tempfile.mkdtemp(prefix='gpu_bench_')); work.mkdir(parents=True, exist_ok=True)
    out = Path(a.out) if a.out else work; out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter(); model = build_model(Path(a.fixture), work/'model', a.tiny)
    print(f"model ready in {time.perf_counter()-t:.1f}s: {model}", flush=True)
    results, partial = [], open(out/'gpu_bench_runs.jsonl', 'a')   # 途中で時間切れになっても、測れた回は残る
    for L in a.lengths:
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
    json.dump(dict(meta=meta, results=results, summary=summary), open(out/'gpu_bench.json', 'w'), indent=1)

if __name__ == '__main__': main()
