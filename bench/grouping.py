"""長さでまとめる（group_by_length）ベンチマーク: 同じデータ・同じモデル・同じ設定で、マイクロバッチを順不同に組む場合（TRL の既定）と
長さの近いペアでまとめる場合（colab-dpo のマイクロバッチ 2 以上での既定）を、同じ実行の中で比べる。

モデルは、語彙への射影より本体（注意と MLP）が重い本物の LLM に近づけるため、`make_tiny_model` の qwen2 を
hidden 256・4 層・MLP 1024 に広げたランダム重みのもの（同梱の小さな日本語トークナイザー、語彙 約 8k）。
データは同梱サンプル（160 組、長さがばらつく日本語）と、それを継ぎ足して長さを対数正規分布にした 160 組の 2 種類。
各実行は別のサブプロセスで、回ごとに順番を入れ替える。測る値: 学習の壁時計時間（`train_runtime`）、学習トークン毎秒
（TRL の `num_tokens` ÷ `train_runtime`、パディングは数えない）、バッチの中のパディングの割合（実際に作られたバッチから数える）。

    python bench/grouping.py                  # 3 回ずつ、中央値
    python bench/grouping.py --quick --json out.json
"""
import argparse, json, math, os, random, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT/'colab_dpo'/'assets'/'sample_dpo_dataset.jsonl'

def build_model(out:Path) -> Path:
    "本体が重い小さな qwen2（hidden 256、4 層）を作って保存する"
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from colab_dpo.tiny import make_tiny_model
    base = make_tiny_model(out/'base', arch='qwen2', seed=0)
    cfg = AutoConfig.from_pretrained(base)
    cfg.update(dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                    head_dim=32, max_window_layers=4, layer_types=['full_attention'] * 4))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(out/'model')
    AutoTokenizer.from_pretrained(base).save_pretrained(out/'model')
    return out/'model'

def lognormal_data(out:Path, rows:int=160, seed:int=0) -> Path:
    "同梱サンプルの文を継ぎ足して、答えの長さ（文字数）が対数正規分布（中央値 120、σ 0.8）になる選好ペアを作る"
    src = [json.loads(l) for l in open(SAMPLE, encoding='utf-8')]
    rnd = random.Random(seed)
    def fill(key, n):
        s = ''
        while len(s) < n: s += rnd.choice(src)[key]
        return s[:n]
    with open(out, 'w', encoding='utf-8') as f:
        for i in range(rows):
            r = dict(prompt=fill('prompt', int(min(400, rnd.lognormvariate(math.log(40), 0.6)))),
                     chosen=fill('chosen', int(min(1200, rnd.lognormvariate(math.log(120), 0.8)))),
                     rejected=fill('rejected', int(min(1200, rnd.lognormvariate(math.log(90), 0.8)))))
            f.write(json.dumps(r, ensure_ascii=False) + '\n')
    return out

def worker(a):
    import warnings
    os.environ.setdefault('HF_DATASETS_DISABLE_PROGRESS_BARS', '1')
    import torch, transformers, trl, datasets  # 重い import は計測の外
    from colab_dpo.training import DPORecipe, train_dpo
    from transformers import TrainerCallback
    datasets.disable_caching(); warnings.simplefilter('ignore')
    pad = dict(real=0, padded=0, seconds=0.0)
    class PadCount(TrainerCallback):
        "学習と同じ sampler・照合器で 1 エポック分のマイクロバッチを組み、attention_mask からパディングの割合を数える（この時間は学習時間から引く）"
        def on_train_begin(self, args, state, control, train_dataloader=None, **kw):
            t = time.perf_counter()
            for b in train_dataloader:
                m = b['attention_mask']; pad['real'] += int(m.sum()); pad['padded'] += m.numel()
            pad['seconds'] = time.perf_counter() - t
    out = Path(tempfile.mkdtemp(prefix=f'grouping_{a.worker}_'))
    recipe = DPORecipe.from_profile('cpu', models=[a.model], data=a.data, output_dir=str(out), dry_run=False, quantization=None,
                                    precision='fp32', max_rows=None, eval_ratio=0.0, resume=None, save_steps=10**6, logging_steps=5,
                                    per_device_train_batch_size=a.micro, gradient_accumulation_steps=1, max_steps=-1, num_train_epochs=1,
                                    max_length=a.max_length, max_prompt_length=a.max_length//2, learning_rate=5e-5,
                                    precompute_ref_log_probs=False, gradient_checkpointing=False, auto_plan=False,
                                    group_by_length=a.worker == 'grouped')
    t0 = time.perf_counter()
    res = train_dpo(recipe, callbacks=[PadCount()])
    wall = time.perf_counter() - t0
    hist = res.log_history
    ntok = max([h['num_tokens'] for h in hist if 'num_tokens' in h] or [0])
    rt = next((h['train_runtime'] for h in reversed(hist) if 'train_runtime' in h), None)
    rt = rt - pad['seconds'] if rt else rt
    r = dict(variant=a.worker, wall_s=wall, train_runtime=rt, num_tokens=ntok, tokens_per_s=ntok/rt if rt else None,
             padding_share=1 - pad['real']/pad['padded'] if pad['padded'] else None,
             group_by_length=res.run_card['recipe']['group_by_length'], steps=res.metrics.get('step'),
             versions=dict(torch=torch.__version__, transformers=transformers.__version__, trl=trl.__version__))
    print('RESULT ' + json.dumps(r), flush=True)

def spawn(variant:str, a, model:Path, data:Path) -> dict:
    cmd = [sys.executable, __file__, '--worker', variant, '--model', str(model), '--data', str(data), '--micro', str(a.micro),
           '--max-length', str(a.max_length)]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'COLAB_DPO_LANG': 'en'})
    rs = [json.loads(l[7:]) for l in p.stdout.splitlines() if l.startswith('RESULT ')]
    if p.returncode or not rs: raise SystemExit(f'{variant} failed (exit {p.returncode}):\n{p.stderr[-3000:]}')
    return rs[0]

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--repeat', type=int, default=3); ap.add_argument('--quick', action='store_true')
    ap.add_argument('--micro', type=int, default=8); ap.add_argument('--max-length', type=int, default=512)
    ap.add_argument('--json'); ap.add_argument('--worker'); ap.add_argument('--model'); ap.add_argument('--data')
    a = ap.parse_args()
    if a.worker: return worker(a)
    if a.quick: a.repeat = 1
    work = Path(tempfile.mkdtemp(prefix='grouping_bench_'))
    model = build_model(work)
    datasets = dict(sample=SAMPLE, lognormal=lognormal_data(work/'lognormal.jsonl'))
    print(f'model: qwen2 hidden 256, 4 layers (random), builtin tokenizer; micro-batch {a.micro}, max_length {a.max_length}; '
          f'cpus={os.cpu_count()} date={time.strftime("%Y-%m-%d")}', flush=True)
    report = dict(date=time.strftime('%Y-%m-%d'), cpus=os.cpu_count(), micro=a.micro, max_length=a.max_length, repeat=a.repeat, runs={})
    for name, data in datasets.items():
        runs = {'random': [], 'grouped': []}
        for i in range(a.repeat):
            for v in (['random', 'grouped'] if i % 2 == 0 else ['grouped', 'random']):
                r = spawn(v, a, model, data); runs[v].append(r)
                print(f'  {name:9s} rep {i} {v:8s} train {r["train_runtime"]:6.1f} s  {r["tokens_per_s"]:7.0f} tok/s  '
                      f'padding {r["padding_share"]:.1%}  steps {r["steps"]}', flush=True)
        med = {v: {k: statistics.median(x[k] for x in rs) for k in ('train_runtime', 'tokens_per_s', 'padding_share', 'wall_s')} for v, rs in runs.items()}
        ratio = med['grouped']['tokens_per_s'] / med['random']['tokens_per_s']
        print(f"{name}: random {med['random']['train_runtime']:.1f} s ({med['random']['padding_share']:.1%} padding) → grouped "
              f"{med['grouped']['train_runtime']:.1f} s ({med['grouped']['padding_share']:.1%}); tokens/s ×{ratio:.2f} (medians of {a.repeat})", flush=True)
        report['runs'][name] = dict(runs=runs, median=med, tokens_per_s_ratio=ratio, versions=runs['random'][0]['versions'])
    if a.json: Path(a.json).write_text(json.dumps(report, indent=1))

if __name__ == '__main__': main()
