"""ハイパーパラメーター探索のベンチマーク: 同じ探索を枝刈りあり（median）となし（none）で走らせ、同じ実行の中で比べる。

測るもの:
- 枝刈りで削れた学習ステップの割合 = 1 − （枝刈りありの総ステップ ÷ 枝刈りなしの総ステップ）。目標 ≥ 30%
- 探索の壁時計時間（両方）
- 最良のレシピ（枝刈りありの探索）と既定のレシピ（DPORecipe の既定の learning_rate・beta・lora_r）を、同じ長さで学習し直し、
  **学習にも探索の評価にも使っていない保留データ**で比べた log-prob の選好の正解率（1 トークンあたり）と暗黙の報酬の正解率（Wilson の 95% 区間つき）

課題:
- selftest（既定）: `colab_dpo.selftest` の事前学習済みミニモデル（hidden 128、4 層）と丁寧体／普通体の課題。保留データは学習用ペアに
  出てこない項目だけ。探索は学習用ペアの中の eval_ratio の分割で目的を測る（保留データは最後の比較だけに使う）
- sample: `colab_dpo.selftest` が無いとき。ランダムなミニモデルと同梱サンプル（学習しても汎化しないので、配線と枝刈りの率だけの確認）

    python bench/tune.py                        # 12 試行（12 ステップ、評価 3 回）× 2 探索 + 2 回の学習（混んだ 2 コアで約 25 分）
    python bench/tune.py --trials 4 --quick     # 動作確認
    python bench/tune.py --json bench/results/tune.json
"""
import argparse, json, os, tempfile, time
from pathlib import Path

os.environ.setdefault('TQDM_DISABLE', '1'); os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('MPLBACKEND', 'Agg')

def wilson(k:int, n:int) -> list:
    "評価モジュールの Wilson 区間（報告用に 4 桁で丸める）"
    from colab_dpo.evaluation import wilson as _w
    return [round(x, 4) for x in _w(k, n)]

def selftest_module():
    import colab_dpo.selftest as st
    return st

def write_jsonl(rows, p:Path) -> Path:
    p.write_text('\n'.join(json.dumps(r, ensure_ascii=False) for r in rows) + '\n', encoding='utf-8'); return p

def setup(task:str, work:Path, seed:int, args):
    "ミニモデル、学習用データ、保留データ、基準のレシピ"
    from colab_dpo.training import DPORecipe
    st = selftest_module() if task == 'selftest' else None
    if task == 'selftest' and st is None: print('colab_dpo.selftest が無いので sample 課題で測ります'); task = 'sample'
    common = dict(quantization=None, precision='fp32', max_length=128, max_prompt_length=64, per_device_train_batch_size=8,
                  gradient_accumulation_steps=1, gradient_checkpointing=False, eval_ratio=args.eval_ratio, logging_steps=5, save_steps=10**6,
                  resume=None, seed=seed, optim='adamw_torch', output_dir=str(work/'base'))
    if task == 'selftest':
        mini = st.pretrain_mini_model(seed=seed)
        train, held, _ = st.style_task(seed=seed)
        return task, DPORecipe(models=[str(mini)], data=str(write_jsonl(train, work/'train.jsonl')), **common), held
    from colab_dpo.tiny import make_tiny_model
    from colab_dpo.data import load_sample, split_train_eval
    tiny = make_tiny_model(work/'tiny', arch='qwen2', seed=seed)
    ds = load_sample().dataset
    tr, ho = split_train_eval(ds, eval_ratio=0.25, seed=seed)
    return task, DPORecipe(models=[str(tiny)], data=str(write_jsonl(list(tr), work/'train.jsonl')), **common), list(ho)

def search(base, pruner:str, args, out:Path) -> dict:
    from colab_dpo.tune import tune_dpo
    t = time.time()
    res = tune_dpo(base, n_trials=args.trials, trial_steps=args.trial_steps, evals=args.evals, pruner=pruner, seed=args.seed,
                   output_dir=out, plots=(pruner != 'none'))
    rows = [dict(number=x['number'], state=x['state'], steps=x['steps'], value=x['value'],
                 last_report=x['reports'][-1][1] if x['reports'] else None, wall_s=x['wall_s'], rss_gb=x['rss_gb'],
                 **{k: x['params'].get(k) for k in ('learning_rate', 'beta', 'lora_r')}) for x in res.trials]
    return dict(pruner=pruner, wall_s=time.time() - t, steps=sum(r['steps'] or 0 for r in rows), best_params=res.best_params,
                best_value=res.best_value, trials=rows, best_recipe=str(res.files['best_recipe']))

def final(recipe, held, name:str, work:Path, steps:int) -> dict:
    "同じ長さで学習し直し、保留データ（学習にも探索の評価にも使っていない）で評価する"
    from colab_dpo.training import train_dpo, DPORecipe
    from colab_dpo.loading import load_model
    from colab_dpo.evaluation import preference_eval
    from peft import PeftModel
    r = recipe.replace(max_steps=steps, output_dir=str(work/name), eval_ratio=0.0)
    t = time.time(); res = train_dpo(r); wall = time.time() - t
    model, tok, _ = load_model([r.models[0]], quantization=None, precision='fp32')
    pe = preference_eval(PeftModel.from_pretrained(model, str(res.adapter_dir)), tok, held, beta=r.beta, max_length=r.max_length)
    s, n = pe.summary, pe.summary['n']
    k_tok = round(s['after']['accuracy_per_token'] * n); k_rw = round(s['reward_accuracy'] * n)
    return dict(recipe={k: getattr(r, k) for k in ('learning_rate', 'beta', 'lora_r', 'lora_alpha', 'max_steps')}, n=n, train_s=wall,
                logp_acc_per_token_before=s['before']['accuracy_per_token'], logp_acc_per_token_after=s['after']['accuracy_per_token'],
                logp_acc_per_token_after_ci=wilson(k_tok, n), reward_accuracy=s['reward_accuracy'], reward_accuracy_ci=wilson(k_rw, n),
                reward_margin=s['reward_margin'])

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--task', default='selftest', choices=['selftest', 'sample'])
    ap.add_argument('--trials', type=int, default=12); ap.add_argument('--trial-steps', type=int, default=12)
    ap.add_argument('--evals', type=int, default=3); ap.add_argument('--eval-ratio', type=float, default=0.15)
    ap.add_argument('--final-steps', type=int, default=None)
    ap.add_argument('--seed', type=int, default=0); ap.add_argument('--quick', action='store_true')
    ap.add_argument('--json', default=None); ap.add_argument('--work', default=None)
    ap.add_argument('--phases', default='median,none,final', help='走らせる段階（別々のプロセスで並べて走らせ、--merge で 1 つにまとめられる）')
    ap.add_argument('--merge', nargs='*', default=[], help='ほかの段階の JSON を読み込んでまとめる')
    args = ap.parse_args()
    if args.quick: args.trial_steps, args.evals = 4, 2
    work = Path(args.work or tempfile.mkdtemp(prefix='bench_tune_')); work.mkdir(parents=True, exist_ok=True)
    import torch, transformers, trl, optuna
    t0 = time.time()
    task, base, held = setup(args.task, work, args.seed, args)
    out = dict(task=task, args=vars(args), versions=dict(torch=torch.__version__, transformers=transformers.__version__, trl=trl.__version__,
               optuna=optuna.__version__), cpu_count=os.cpu_count(), heldout_pairs=len(held))
    save = lambda: args.json and Path(args.json).write_text(json.dumps(out, ensure_ascii=False, indent=1, default=str))   # 途中まででも残す
    for f in args.merge: out.update({k: v for k,v in json.loads(Path(f).read_text()).items() if k in ('pruned', 'unpruned', 'final')})
    ph = args.phases.split(',')
    if 'median' in ph: out['pruned'] = search(base, 'median', args, work/'tune_median'); save()
    if 'none' in ph: out['unpruned'] = search(base, 'none', args, work/'tune_none'); save()
    if 'final' not in ph: return
    if 'unpruned' in out: out['steps_cut'] = 1 - out['pruned']['steps'] / out['unpruned']['steps']
    from colab_dpo.training import DPORecipe
    d = DPORecipe()
    steps = args.final_steps or args.trial_steps
    best = DPORecipe.load(out['pruned']['best_recipe'])
    out['final'] = dict(best=final(best, held, 'final_best', work, steps),
                        default=final(base.replace(learning_rate=d.learning_rate, beta=d.beta, lora_r=d.lora_r, lora_alpha=d.lora_alpha),
                                      held, 'final_default', work, steps))
    out['total_s'] = time.time() - t0
    p, u, f = out['pruned'], out.get('unpruned'), out['final']
    print(f"\n課題 {task}、保留 {len(held)} 組。枝刈りあり: {p['steps']} ステップ・{p['wall_s']:.0f} 秒")
    if u: print(f"なし: {u['steps']} ステップ・{u['wall_s']:.0f} 秒 → 削れたステップ {out['steps_cut']:.1%}、時間の比 {p['wall_s']/u['wall_s']:.2f}")
    for k in ('best', 'default'):
        x = f[k]
        print(f"{k}: {x['recipe']} → log-prob 正解率（1 トークンあたり）{x['logp_acc_per_token_before']:.1%} → {x['logp_acc_per_token_after']:.1%} "
              f"{x['logp_acc_per_token_after_ci']}、報酬の正解率 {x['reward_accuracy']:.1%} {x['reward_accuracy_ci']}、マージン {x['reward_margin']:+.3f}")
    save()

if __name__ == '__main__': main()
