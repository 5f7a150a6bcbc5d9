"""CPU の学習ベンチマーク: 同じデータ（同梱サンプル）・同じ小さな qwen2 モデル・同じ設定で、素の TRL と colab-dpo を同じ実行の中で比べる。

比べるもの（どれも 1 回ごとに別のサブプロセスで走らせ、回ごとに順番を入れ替える。中央値を出す）:
- (a) plain_same:  TRL のドキュメントどおりの素のスクリプト（DPOConfig + DPOTrainer + peft の LoraConfig、processing_class、
                   use_cpu=True、bf16=False を明示: TRL 0.19 以降は bf16 が既定で有効）
- (b0) colab_same_nocompact: `train_dpo`（auto_plan=False）に (a) と同じマイクロバッチ・勾配蓄積・事前計算・勾配チェックポイント・
                   オプティマイザー・max_length・学習率・ステップ数を渡し、CPU の位置の詰め込み（COLAB_DPO_CPU_COMPACT=0）も切る
                   → colab-dpo の上乗せ（overhead）だけの比
- (b) colab_same:  (b0) と同じ設定で、colab-dpo の既定どおり CPU の位置の詰め込み（`compat.cpu_compact_logprobs`）あり
- (a') plain_defaults: 素の TRL を DPOConfig の既定値のまま 2 エポック（TRL の既定: マイクロバッチ 8、勾配チェックポイントあり、adamw_torch_fused）
- (c) colab_defaults:  colab-dpo の CPU プロファイル（`DPORecipe.from_profile('cpu')`）の学習設定のまま同じ行を 2 エポック
                       （ドライランを切り、データ・エポック数・評価なし・保存なしだけを上書き）
測る値: 壁時計時間（モデル読み込みから学習・アダプター保存まで。重い import は除く）、学習トークン毎秒（TRL が記録する
`num_tokens` ÷ `train_runtime`）、ピーク RSS（子プロセスの `getrusage(RUSAGE_SELF).ru_maxrss`）。
加えて、バッチの中のパディングの割合を、同梱サンプルと対数正規分布の長さの 10 万行で、長さでまとめる場合とまとめない場合について
トークン長の算術だけで求める（学習はしない）。

    python bench/cpu_train.py                 # 3 回ずつ、中央値（混んだ 2 コアで約 10 分）

既定の量が小さい（8 ステップ × 1 ペア、max_length 128、2 エポック比較は 4 行）のは、TinySwallow の語彙 151,665 のロジットが
CPU では 1 トークンあたり約 11 ms（順伝播＋逆伝播、混んだ 2 コア）かかるため。--steps などで増やせる。
    python bench/cpu_train.py --quick         # 1 回ずつの動作確認
    python bench/cpu_train.py --json out.json
"""
import argparse, json, os, random, resource, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT/'colab_dpo'/'assets'/'sample_dpo_dataset.jsonl'
VARIANTS = ['plain_same', 'colab_same_nocompact', 'colab_same', 'plain_defaults', 'colab_defaults']
ABLATIONS = ['colab_defaults_nocompact', 'colab_defaults_noprecompute']   # 既定から位置の詰め込み・参照の事前計算を 1 つずつ外す
ARG_KEYS = ['per_device_train_batch_size', 'gradient_accumulation_steps', 'max_steps', 'num_train_epochs', 'learning_rate',
            'lr_scheduler_type', 'warmup_steps', 'gradient_checkpointing', 'precompute_ref_log_probs', 'optim', 'max_length',
            'beta', 'loss_type', 'seed', 'pad_to_multiple_of', 'train_sampling_strategy', 'bf16', 'fp16', 'use_cpu', 'truncation_mode']

# ---------------------------------------------------------------- worker (one training run in its own process)
def _args_cb(store:dict):
    from transformers import TrainerCallback
    class ArgsCB(TrainerCallback):
        "学習開始時の実際の TrainingArguments を記録する（(a) と (b) の設定が同じかを確かめるため）"
        def on_train_begin(self, args, state, control, **kw):
            store.update({k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                          for k in ARG_KEYS for v in [getattr(args, k, '<absent>')]})
    return ArgsCB()

def run_plain(a, out:Path, cb, defaults:bool):
    "TRL のドキュメントどおりの素の書き方（LoRA の例）"
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(a.model)
    ds = load_dataset('json', data_files=str(a.data), split='train')
    common = dict(output_dir=str(out), use_cpu=True, bf16=False, logging_steps=1, save_strategy='no', report_to='none')
    if defaults: args = DPOConfig(num_train_epochs=a.epochs, **common)
    else: args = DPOConfig(per_device_train_batch_size=a.micro, gradient_accumulation_steps=a.accum, max_steps=a.steps,
                           max_length=a.max_length, learning_rate=a.lr, lr_scheduler_type='cosine', warmup_steps=0.1,
                           gradient_checkpointing=False, precompute_ref_log_probs=False, optim='adamw_torch', seed=42, **common)
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules='all-linear', task_type='CAUSAL_LM')
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config, callbacks=[cb])
    trainer.train()
    trainer.save_model(str(out/'adapter'))
    return trainer.state.log_history

def run_colab(a, out:Path, cb, defaults:bool):
    "colab-dpo の `train_dpo`。same は (a) と同じ設定、defaults は CPU プロファイルの学習設定のまま"
    from colab_dpo.training import DPORecipe, train_dpo
    io = dict(models=[str(a.model)], data=str(a.data), output_dir=str(out), dry_run=False, quantization=None, precision='fp32',
              max_rows=None, eval_ratio=0.0, resume=None, save_steps=10**6, logging_steps=1)
    if defaults:
        ablate = dict(precompute_ref_log_probs=False) if a.worker.endswith('_noprecompute') else {}
        recipe = DPORecipe.from_profile('cpu', num_train_epochs=a.epochs, max_steps=-1, **ablate, **io)
    else: recipe = DPORecipe.from_profile('cpu', per_device_train_batch_size=a.micro, gradient_accumulation_steps=a.accum,
                                          max_steps=a.steps, max_length=a.max_length, max_prompt_length=a.max_length-1,  # 素の TRL はプロンプトを別に切らないので揃える
                                          learning_rate=a.lr, lr_scheduler_type='cosine', warmup_ratio=0.1, gradient_checkpointing=False,
                                          precompute_ref_log_probs=False, optim='adamw_torch', seed=42, auto_plan=False, **io)
    return train_dpo(recipe, callbacks=[cb]).log_history

def worker(a):
    import warnings
    os.environ.setdefault('HF_DATASETS_DISABLE_PROGRESS_BARS', '1')
    import torch, transformers, trl, peft, datasets  # 重い import は計測の外
    import colab_dpo.training
    datasets.disable_caching(); warnings.simplefilter('ignore')
    if a.worker.endswith('_nocompact'): os.environ['COLAB_DPO_CPU_COMPACT'] = '0'
    out, store = Path(tempfile.mkdtemp(prefix=f'cpu_bench_{a.worker}_')), {}
    cb = _args_cb(store)
    t0 = time.perf_counter()
    run = run_colab if a.worker.startswith('colab') else run_plain
    hist = run(a, out, cb, defaults='_defaults' in a.worker)
    patched = getattr(__import__('trl.trainer.utils', fromlist=['x']), '_use_triton', None)
    wall = time.perf_counter() - t0
    ntok = max([h['num_tokens'] for h in hist if 'num_tokens' in h] or [0])
    rt = next((h['train_runtime'] for h in reversed(hist) if 'train_runtime' in h), None)
    steps = max([h.get('step', 0) for h in hist] or [0])
    r = dict(variant=a.worker, wall_s=wall, train_runtime=rt, num_tokens=ntok, tokens_per_s=ntok/rt if rt else None,
             steps=steps, cpu_compact=hasattr(patched, '_colab_dpo_orig'), peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss*1024/1e9, args=store,
             train_loss=next((h['train_loss'] for h in reversed(hist) if 'train_loss' in h), None),
             versions=dict(torch=torch.__version__, transformers=transformers.__version__, trl=trl.__version__, peft=peft.__version__))
    print('RESULT ' + json.dumps(r), flush=True)

# ---------------------------------------------------------------- padding arithmetic (no training)
def batches(n:int, B:int, grouped:bool, lengths:list, rnd:random.Random, accum:int=1) -> list[list[int]]:
    """行の添字をマイクロバッチ B に分ける。grouped は transformers の LengthGroupedSampler と同じ考え方:
    ランダムに並べ、B×accum×50 行のメガバッチの中で長い順に並べてから B ずつ切る"""
    idx = list(range(n)); rnd.shuffle(idx)
    if grouped:
        g = B*accum; mult = max(1, min(n // (g*4), 50)); mega = g*mult
        idx = [i for s in range(0, n, mega) for i in sorted(idx[s:s+mega], key=lambda i: -lengths[i])]
    return [idx[s:s+B] for s in range(0, n, B)]

def padding_share(pairs:list, B:int, grouped:bool, max_length:int, seed:int=0, multiple:int|None=None, accum:int=1) -> float:
    """TRL の DPO の照合器と同じ数え方: 1 バッチは B 組の (prompt+chosen, prompt+rejected) の 2B 系列で、
    各系列を max_length で切り、バッチ内の最長（pad_to_multiple_of があればその倍数）まで右に詰める"""
    seqs = [(min(c, max_length), min(r, max_length)) for c,r in pairs]
    key = [max(c, r) for c,r in seqs]
    real = padded = 0
    for b in batches(len(seqs), B, grouped, key, random.Random(seed), accum):
        ls = [x for i in b for x in seqs[i]]
        m = max(ls)
        if multiple: m = -(-m//multiple)*multiple
        real += sum(ls); padded += m*len(ls)
    return 1 - real/padded

def lognormal_pairs(n:int, seed:int=0) -> list:
    "実データらしい長さの広がり: prompt 中央値 60、chosen 200、rejected 150 トークンの対数正規分布（σ 0.6〜0.9）"
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        p = max(4, int(rnd.lognormvariate(4.1, 0.9)))
        out.append((p + max(1, int(rnd.lognormvariate(5.3, 0.7))), p + max(1, int(rnd.lognormvariate(5.0, 0.8)))))
    return out

def sample_pairs(tok) -> list:
    rows = [json.loads(l) for l in open(SAMPLE, encoding='utf-8')]
    n = lambda s: len(tok(s, add_special_tokens=False)['input_ids'])
    return [(n(r['prompt']) + n(r['chosen']), n(r['prompt']) + n(r['rejected'])) for r in rows]

def padding_report(tok, sample_max_length:int, rows:int=100_000) -> list:
    res = []
    for name, pairs, L in (('sample (160 rows)', sample_pairs(tok), sample_max_length), (f'log-normal ({rows:,} rows)', lognormal_pairs(rows), 1024)):
        for B in (1, 2, 4, 8):
            plain, grp = padding_share(pairs, B, False, L), padding_share(pairs, B, True, L, accum=max(1, 8//B))
            m64 = padding_share(pairs, B, False, L, multiple=64)
            res.append(dict(data=name, max_length=L, micro_batch=B, padding_random=plain, padding_grouped=grp,
                            padding_random_pad64=m64, real_tokens_ratio=(1-plain) and (1-grp)/(1-plain)))
    return res

# ---------------------------------------------------------------- driver
def spawn(variant:str, a, model:Path, data:Path) -> dict:
    cmd = [sys.executable, __file__, '--worker', variant, '--model', str(model), '--data', str(data), '--steps', str(a.steps),
           '--micro', str(a.micro), '--accum', str(a.accum), '--max-length', str(a.max_length), '--lr', str(a.lr), '--epochs', str(a.epochs)]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'COLAB_DPO_LANG': 'en'})
    rs = [json.loads(l[7:]) for l in p.stdout.splitlines() if l.startswith('RESULT ')]
    if p.returncode or not rs: raise SystemExit(f'{variant} failed (exit {p.returncode}):\n{p.stderr[-3000:]}')
    return {**rs[0], 'process_s': time.perf_counter() - t}

def _med(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None]
    return statistics.median(v) if v else None

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--repeat', type=int, default=3); ap.add_argument('--quick', action='store_true', help='1 回ずつの動作確認')
    ap.add_argument('--steps', type=int, default=8); ap.add_argument('--micro', type=int, default=1); ap.add_argument('--accum', type=int, default=1)
    ap.add_argument('--max-length', type=int, default=128); ap.add_argument('--lr', type=float, default=5e-5)
    ap.add_argument('--epochs', type=float, default=2.0); ap.add_argument('--epoch-rows', type=int, default=4, help='2 エポック比較に使う行数（先頭から）')
    ap.add_argument('--padding-rows', type=int, default=100_000); ap.add_argument('--json')
    ap.add_argument('--skip-train', action='store_true', help='パディングの算術だけ')
    ap.add_argument('--variants', nargs='+', default=VARIANTS, choices=VARIANTS + ABLATIONS,
                    help='走らせる条件（既定は 5 つ）。ABLATIONS は CPU の既定から最適化を 1 つずつ外したもの')
    ap.add_argument('--worker'); ap.add_argument('--model'); ap.add_argument('--data')
    a = ap.parse_args()
    if a.worker: return worker(a)
    if a.quick: a.repeat = 1
    from transformers import AutoTokenizer
    from colab_dpo.tiny import make_tiny_model, fixture_path
    work = Path(tempfile.mkdtemp(prefix='cpu_bench_'))
    fx = fixture_path('tinyswallow_tokenizer')
    model = make_tiny_model(work/'model', arch='qwen2', tokenizer=str(fx) if fx else None, seed=0)
    tok = AutoTokenizer.from_pretrained(model)
    print(f'model: tiny qwen2 (hidden 64, 2 layers), vocab {len(tok):,}, tokenizer {"TinySwallow (fixture)" if fx else "built-in tiny"}; '
          f'cpus={os.cpu_count()} date={time.strftime("%Y-%m-%d")}', flush=True)
    report = dict(date=time.strftime('%Y-%m-%d'), cpus=os.cpu_count(), tokenizer='tinyswallow' if fx else 'builtin', vocab=len(tok),
                  settings=dict(steps=a.steps, micro=a.micro, accum=a.accum, max_length=a.max_length, lr=a.lr, epochs=a.epochs,
                                epoch_rows=a.epoch_rows, repeat=a.repeat))
    if not a.skip_train:
        sub = work/'epoch_rows.jsonl'
        sub.write_text(''.join(SAMPLE.read_text(encoding='utf-8').splitlines(keepends=True)[:a.epoch_rows]), encoding='utf-8')
        plan = [(v, sub if '_defaults' in v else SAMPLE) for v in a.variants]
        results = {v: [] for v,_ in plan}
        for i in range(a.repeat):
            for v, data in (plan if i % 2 == 0 else plan[::-1]):
                r = spawn(v, a, model, data); results[v].append(r)
                print(f'  rep {i} {v:20s} wall {r["wall_s"]:6.1f} s  {r["tokens_per_s"] or 0:7.0f} tok/s  steps {r["steps"]}  '
                      f'RSS {r["peak_rss_gb"]:.2f} GB  compact {r["cpu_compact"]}', flush=True)
        report['versions'] = next(iter(results.values()))[0]['versions']; report['runs'] = results
        print(f"\nversions: {report['versions']}")
        if 'plain_same' in results and 'colab_same' in results:
            same = results['plain_same'][0]['args'], results['colab_same'][0]['args']
            diff = {k: (same[0].get(k), same[1].get(k)) for k in ARG_KEYS if same[0].get(k) != same[1].get(k)}
            print('identical settings check (a) vs (b): ' + ('all of ' + ', '.join(ARG_KEYS) + ' equal' if not diff else f'DIFFER {diff}'))
        for v in [v for v in results if '_defaults' in v]:
            s = results[v][0]['args']
            print(f"  {v}: micro {s['per_device_train_batch_size']} x accum {s['gradient_accumulation_steps']}, gradient_checkpointing "
                  f"{s['gradient_checkpointing']}, precompute_ref {s['precompute_ref_log_probs']}, optim {s['optim']}, max_length {s['max_length']}, "
                  f"lr {s['learning_rate']}, epochs {s['num_train_epochs']}, sampling {s['train_sampling_strategy']}")
        summ = {v: {k: _med(rs, k) for k in ('wall_s', 'process_s', 'tokens_per_s', 'num_tokens', 'peak_rss_gb', 'steps')} for v, rs in results.items()}
        report['summary'] = summ
        print(f"\n{'variant':20s} {'wall s':>7s} {'proc s':>7s} {'train tok/s':>11s} {'tokens':>8s} {'steps':>5s} {'peak RSS GB':>11s}   (medians of {a.repeat})")
        for v, s in summ.items():
            print(f"{v:20s} {s['wall_s']:7.1f} {s['process_s']:7.1f} {s['tokens_per_s']:11.0f} {s['num_tokens']:8.0f} {s['steps']:5.0f} {s['peak_rss_gb']:11.2f}")
        ratios = {}
        for ours, base, what in (('colab_same_nocompact', 'plain_same', 'identical settings, compaction off (overhead)'),
                                 ('colab_same', 'plain_same', 'identical settings, colab-dpo CPU compaction on'),
                                 ('colab_defaults', 'plain_defaults', 'defaults, 2 epochs'),
                                 ('colab_defaults_nocompact', 'plain_defaults', 'defaults without CPU compaction, 2 epochs'),
                                 ('colab_defaults_noprecompute', 'plain_defaults', 'defaults without ref precompute, 2 epochs')):
            if ours not in summ or base not in summ: continue
            o, b = summ[ours], summ[base]
            ratios[what] = dict(wall=o['wall_s']/b['wall_s'], tokens_per_s=o['tokens_per_s']/b['tokens_per_s'], rss=o['peak_rss_gb']/b['peak_rss_gb'],
                                speedup_wall=b['wall_s']/o['wall_s'])
            rr = ratios[what]
            print(f"ratio {ours}/{base} [{what}]: wall ×{rr['wall']:.3f} (overhead {100*(rr['wall']-1):+.1f}%, speed-up ×{rr['speedup_wall']:.2f}), "
                  f"train tok/s ×{rr['tokens_per_s']:.3f}, peak RSS ×{rr['rss']:.3f}")
        report['ratios'] = ratios
    print(f'\npadding share of batches (TRL DPO collator: 2B sequences per micro-batch padded to the longest; random order vs '
          f'length-grouped megabatches as transformers LengthGroupedSampler):')
    pad = padding_report(tok, a.max_length, a.padding_rows); report['padding'] = pad
    print(f"{'data':24s} {'max_len':>7s} {'B':>2s} {'random':>7s} {'grouped':>7s} {'random+pad64':>12s} {'grouped/random pad':>18s}")
    for p in pad:
        rel = p['padding_grouped']/p['padding_random'] if p['padding_random'] else float('nan')
        print(f"{p['data']:24s} {p['max_length']:7d} {p['micro_batch']:2d} {p['padding_random']:7.1%} {p['padding_grouped']:7.1%} "
              f"{p['padding_random_pad64']:12.1%} {rel:18.2f}")
    print("note: arithmetic only. colab-dpo groups by length when micro-batch > 1 (compat.group_pairs_by_length); its measured effect "
          "on training speed is in bench/grouping.py.")
    if a.json: Path(a.json).write_text(json.dumps(report, indent=1, default=str))

if __name__ == '__main__': main()
