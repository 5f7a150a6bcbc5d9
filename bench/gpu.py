"""GPU ベンチマーク: TinySwallow-1.5B と同じ構造のランダム初期化モデルを 4bit NF4 + fp16（T4 と同じ設定）で DPO 学習し、
素の TRL の既定値（TRL のドキュメントどおりの書き方）と colab-dpo の T4 レシピ（`train_dpo`）を同じ実行の中で比べる。

測るもの: ピークの GPU メモリ（allocated / reserved）と学習トークン毎秒（TRL が記録する `num_tokens` ÷ `train_runtime`）、
読み込みから学習終了までの壁時計時間。各条件を --repeat 回（同じプロセスで、データセットのキャッシュは無効）測り中央値を出す。
Hub には接続しない: 構造は `config.json`（../shared/fixtures/tinyswallow_tokenizer/config.json）、トークナイザーは同じフォルダから読む。

    python bench/gpu.py --fixture DIR [--lengths 512 1024] [--steps 3] [--repeat 3] [--out OUT_DIR]
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
        return tok.decode(ids[:n])
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

def run_colab(model_dir, data, L, steps, out, gpu):
    "colab-dpo の T4 レシピ（`train_dpo`）。GPU では fp16 を強制して T4 と同じ条件にする"
    from colab_dpo.training import DPORecipe, train_dpo
    recipe = DPORecipe.from_profile('t4' if gpu else 'cpu', models=[str(model_dir)], data=str(data), max_steps=steps,
                                    max_length=L, max_prompt_length=L//2, output_dir=str(out), eval_ratio=0.0,
                                    save_steps=10**6, resume=None, logging_steps=1, dry_run=False, max_rows=None,
                                    quantization='4bit', precision='fp16' if gpu else 'fp32')
    return train_dpo(recipe).log_history

def worker(a):
    "1 条件を --repeat 回測って JSON を 1 行出す"
    import gc, torch, datasets
    datasets.disable_caching()  # TRL の参照 log-prob の事前計算がキャッシュで省かれないように
    gpu = torch.cuda.is_available()
    res = []
    for rep in range(a.repeat):
        gc.collect()
        if gpu: torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
        out = Path(tempfile.mkdtemp(prefix=f'{a.variant}_{a.max_length}_'))
        t0, err = time.perf_counter(), None
        try:
            if a.variant == 'colab': hist = run_colab(a.model, a.data, a.max_length, a.steps, out, gpu)
            else: hist = run_plain(a.model, a.data, a.max_length, a.steps, out, gpu, fp32_fix=a.variant=='plain_fp32fix')
        except Exception as e:  # 失敗も結果として記録する（素の TRL が fp16 + QLoRA で落ちるかどうかも測る対象）
            hist, err = [], f"{type(e).__name__}: {str(e)[:300]}"
        wall = time.perf_counter() - t0
        r = dict(variant=a.variant, max_length=a.max_length, rep=rep, wall_s=wall, error=err,
                 num_tokens=_num_tokens(hist), train_runtime=_runtime(hist))
        if r['train_runtime']: r['tokens_per_s'] = r['num_tokens'] / r['train_runtime']
        if gpu: r.update(peak_alloc_gb=torch.cuda.max_memory_allocated()/1e9, peak_reserved_gb=torch.cuda.max_memory_reserved()/1e9)
        print('RESULT ' + json.dumps(r), flush=True)
        res.append(r)
        if err: break
        del hist; gc.collect()

def _med(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None and not r.get('error')]
    return statistics.median(v) if v else None

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--fixture', default=str(ROOT.parent/'shared'/'fixtures'/'tinyswallow_tokenizer'))
    ap.add_argument('--lengths', type=int, nargs='+', default=[512, 1024])
    ap.add_argument('--steps', type=int, default=3); ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--variants', nargs='+', default=['plain', 'colab'])
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
    results = []
    for L in a.lengths:
        data = build_data(model, work/f'data_{L}.jsonl', L, rows=a.steps*8)
        for v in a.variants:
            cmd = [sys.executable, __file__, '--worker', v, '--model', str(model), '--data', str(data), '--max-length', str(L),
                   '--steps', str(a.steps), '--repeat', str(a.repeat)]
            t = time.perf_counter(); p = subprocess.run(cmd, capture_output=True, text=True)
            rs = [json.loads(l[7:]) for l in p.stdout.splitlines() if l.startswith('RESULT ')]
            if p.returncode or not rs: rs = [dict(variant=v, max_length=L, error=f"exit {p.returncode}: {p.stderr[-800:]}")]
            if v == 'plain' and rs[0].get('error') and 'plain_fp32fix' not in a.variants:  # 素の TRL が落ちたら回避策つきで基準を取り直す
                print(f"plain TRL failed at max_length={L}: {rs[0]['error']}", flush=True)
                results += rs
                cmd[cmd.index('plain')] = 'plain_fp32fix'
                p = subprocess.run(cmd, capture_output=True, text=True)
                rs = [json.loads(l[7:]) for l in p.stdout.splitlines() if l.startswith('RESULT ')] or \
                     [dict(variant='plain_fp32fix', max_length=L, error=f"exit {p.returncode}: {p.stderr[-800:]}")]
            print(f"{v} L={L}: {time.perf_counter()-t:.0f}s", flush=True)
            results += rs
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'
    import transformers, trl, peft
    try: import bitsandbytes as bnb; bv = bnb.__version__
    except ImportError: bv = None
    meta = dict(device=dev, date=time.strftime('%Y-%m-%d'), torch=torch.__version__, transformers=transformers.__version__,
                trl=trl.__version__, peft=peft.__version__, bitsandbytes=bv, steps=a.steps, repeat=a.repeat, tiny=a.tiny)
    print(json.dumps(meta))
    print(f"\n{'max_len':>7} {'variant':>14} {'peak alloc GB':>13} {'peak resv GB':>12} {'train tok/s':>11} {'wall s':>7}  error")
    summary = []
    for L in a.lengths:
        rows = {}
        for v in ['plain', 'plain_fp32fix', 'colab']:
            rs = [r for r in results if r['variant']==v and r['max_length']==L]
            if not rs: continue
            s = dict(variant=v, max_length=L, n=len([r for r in rs if not r.get('error')]), peak_alloc_gb=_med(rs, 'peak_alloc_gb'),
                     peak_reserved_gb=_med(rs, 'peak_reserved_gb'), tokens_per_s=_med(rs, 'tokens_per_s'), wall_s=_med(rs, 'wall_s'),
                     error=next((r['error'] for r in rs if r.get('error')), None))
            rows[v] = s; summary.append(s)
            f = lambda x, p=2: '-' if x is None else f"{x:.{p}f}"
            print(f"{L:>7} {v:>14} {f(s['peak_alloc_gb']):>13} {f(s['peak_reserved_gb']):>12} {f(s['tokens_per_s'],0):>11} {f(s['wall_s'],1):>7}  {(s['error'] or '')[:90]}")
        base = rows.get('plain') if rows.get('plain', {}).get('tokens_per_s') else rows.get('plain_fp32fix')
        ours = rows.get('colab')
        if base and ours and base.get('tokens_per_s') and ours.get('tokens_per_s'):
            ratio = dict(max_length=L, baseline=base['variant'], speed_ratio=ours['tokens_per_s']/base['tokens_per_s'],
                         peak_alloc_ratio=(ours['peak_alloc_gb'] or 0)/(base['peak_alloc_gb'] or 1) if base.get('peak_alloc_gb') else None)
            summary.append(ratio)
            print(f"{L:>7} {'ratio':>14}  colab-dpo / {base['variant']}: tokens/s ×{ratio['speed_ratio']:.2f}, "
                  f"peak allocated ×{ratio['peak_alloc_ratio'] or float('nan'):.2f}")
    json.dump(dict(meta=meta, results=results, summary=summary), open(out/'gpu_bench.json', 'w'), indent=1)

if __name__ == '__main__': main()
