"""自己診断の課題（丁寧体 vs 普通体、保留用の項目は学習用ペアに出てこない）で、学習率 × β を掃引する。

各設定で `colab_dpo.selftest.selftest`（cpu プロファイルのレシピ + 学習率・β の上書き）を走らせ、保留データでの
log-prob の選好（1 トークンあたり）の学習後の値・暗黙の報酬の正解率・生成した回答の丁寧体の割合を記録する。
基準（baseline）は同じ実行の中の「製品の既定のレシピ」の行（DPORecipe の既定の学習率 5e-5、β 0.1）で、各行にその比を出す。

    python bench/selftest_sweep.py                        # 6 学習率 × 3 β × 1 種（混んだ 2 コアで約 1 時間）
    python bench/selftest_sweep.py --seeds 0 1 2          # 3 種
    python bench/selftest_sweep.py --lrs 5e-5 1e-3 --betas 0.1 --json bench/results/x.json
    python bench/selftest_sweep.py --lrs 5e-4 --betas 0.1 --rpo 0 0.5 1 --pretrain-steps 240 360 --seeds 0 1 2 --no-baseline

結果は 1 設定ごとに JSON へ書き足すので、途中で止めても終わった分は残る。
"""
import argparse, json, os, shutil, statistics, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LRS, BETAS = [5e-6, 1e-5, 5e-5, 1e-4, 2e-4, 1e-3], [0.05, 0.1, 0.3]

def one(lr, beta, seed, epochs, rpo=None, pretrain_steps=None):
    from colab_dpo.selftest import selftest
    d = Path(tempfile.mkdtemp(prefix='sweep_'))
    try:
        r = selftest('cpu', d/'st', seed=seed, learning_rate=lr, beta=beta, epochs=epochs, rpo_alpha=rpo,
                     **(dict(pretrain_steps=pretrain_steps) if pretrain_steps else {}))
    finally: shutil.rmtree(d, ignore_errors=True)   # この実行が作った一時フォルダだけを消す
    p, s = r['preference'], r['style']
    return dict(lr=lr, beta=beta, seed=seed, epochs=r['recipe']['num_train_epochs'], rpo_alpha=r['recipe']['rpo_alpha'] or 0.0,
                pretrain_steps=pretrain_steps, n=p['n'], logp_before=p['logp_accuracy_before'],
                logp_after=p['logp_accuracy_after'], logp_after_ci=p['logp_accuracy_after_ci'], reward_acc=p['reward_accuracy'],
                reward_acc_ci=p['reward_accuracy_ci'], margin=p['margin_mean'], p=p['change_p_value'], style_n=s['n'],
                style_before=s['before'], style_after=s['after'], style_p=s['change_p_value'], empty_after=s['empty_after'],
                verdict=r['verdict']['code'], passed=r['passed'], train_s=r['seconds']['train'], eval_s=r['seconds']['eval'])

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--lrs', type=float, nargs='+', default=LRS)
    ap.add_argument('--betas', type=float, nargs='+', default=BETAS)
    ap.add_argument('--rpo', type=float, nargs='+', default=[0.0], help='chosen の NLL 項の重み rpo_alpha（0 で使わない）')
    ap.add_argument('--pretrain-steps', type=int, nargs='+', default=[None], help='ミニモデルの事前学習のステップ数（省略で selftest の既定）')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0])
    ap.add_argument('--epochs', type=float, default=None, help='None なら SELFTEST_RECIPE のエポック数')
    ap.add_argument('--no-baseline', action='store_true', help='基準（DPORecipe の既定の学習率・β、NLL 項なし）の行を足さない')
    ap.add_argument('--json', default=str(ROOT/'bench'/'results'/f'selftest_sweep_{time.strftime("%Y-%m-%d")}.json'))
    a = ap.parse_args()
    from colab_dpo.training import DPORecipe
    base = (DPORecipe().learning_rate, DPORecipe().beta, 0.0, a.pretrain_steps[0])
    grid = [(lr, b, r, st) for st in a.pretrain_steps for r in a.rpo for lr in a.lrs for b in a.betas]
    if not a.no_baseline: grid = [base] + [g for g in grid if g != base]
    rows, t0 = [], time.time()
    for seed in a.seeds:
        for lr,b,rpo,st in grid:
            rows.append(one(lr, b, seed, a.epochs, rpo, st)); x = rows[-1]
            print(f"lr={lr:g} β={b:g} rpo={rpo:g} pretrain={st or '既定'} seed={seed}: logp {x['logp_before']:.0%}→{x['logp_after']:.0%}  "
                  f"reward {x['reward_acc']:.0%}  style {x['style_before']:.0%}→{x['style_after']:.0%} ({100*(x['style_after'] - x['style_before']):+.0f})  "
                  f"{x['verdict']}  ({x['train_s']:.0f}+{x['eval_s']:.0f} s)", flush=True)
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(dict(baseline=dict(lr=base[0], beta=base[1], rpo_alpha=0.0), seeds=a.seeds, rows=rows,
                                                    seconds=time.time() - t0, cpu_count=os.cpu_count()), indent=1))
    # 設定ごとの平均と、基準（製品の既定）の行に対する比
    agg = {}
    for x in rows: agg.setdefault((x['lr'], x['beta'], x['rpo_alpha'], x['pretrain_steps']), []).append(x)
    m = lambda xs, k: statistics.mean(v[k] for v in xs)
    gain = lambda xs: [100*(v['style_after'] - v['style_before']) for v in xs]
    b = agg.get(base) or next(iter(agg.values()))
    print(f"\n{'lr':>8} {'β':>5} {'rpo':>4} {'事前':>4} {'logp後':>7} {'比':>5} {'報酬正解':>8} {'丁寧体後':>8} {'上昇（平均 / 最小）':>18} {'合格':>4}")
    for (lr, be, rpo, st), xs in sorted(agg.items(), key=lambda kv: tuple(v if v is not None else -1 for v in kv[0])):
        print(f"{lr:8g} {be:5g} {rpo:4g} {st or '既定':>4} {m(xs,'logp_after'):7.0%} {m(xs,'logp_after')/max(1e-9, m(b,'logp_after')):5.2f} "
              f"{m(xs,'reward_acc'):8.0%} {m(xs,'style_after'):8.0%} {statistics.mean(gain(xs)):+9.0f} / {min(gain(xs)):+4.0f} "
              f"{sum(v['passed'] for v in xs)}/{len(xs)}" + ('  ← 基準（製品の既定）' if (lr, be, rpo, st) == base else ''))

if __name__ == '__main__': main()
