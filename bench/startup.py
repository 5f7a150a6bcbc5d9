"""起動時間のベンチマーク: CLI の `--help` と `colab-dpo-env` の壁時計時間を、同じ実行の中で測った基準と比べる。

基準は (a) 何もしない Python の起動 と (b) torch + transformers + trl を import するだけのスクリプト
（重い import を遅延しなかった場合に `--help` が払う費用）。各コマンドを --repeat 回測り中央値を出す。

    python bench/startup.py [--repeat 5] [--json OUT.json]
"""
import argparse, json, shutil, statistics, subprocess, sys, time

def timed(cmd, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); r = subprocess.run(cmd, capture_output=True, text=True); ts.append(time.perf_counter() - t)
        if r.returncode != 0: raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return statistics.median(ts)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--repeat', type=int, default=5); ap.add_argument('--json')
    a = ap.parse_args()
    py = sys.executable
    cli = lambda name: [shutil.which(name) or name]
    base = {'python -c pass': [py, '-c', 'pass'],
            'import torch, transformers, trl (eager baseline)': [py, '-c', 'import torch, transformers, trl']}
    ours = {f'{c} --help': cli(c) + ['--help'] for c in
            ['colab-dpo-check-data', 'colab-dpo-env', 'colab-dpo-train', 'colab-dpo-eval', 'colab-dpo-demo']}
    ours['colab-dpo-env'] = cli('colab-dpo-env')
    ours['colab-dpo-env --json'] = cli('colab-dpo-env') + ['--json']
    res = {k: timed(v, a.repeat) for k, v in {**base, **ours}.items()}
    eager = res['import torch, transformers, trl (eager baseline)']
    print(f"{'command':55s} {'median s':>9s} {'÷ eager import':>15s}")
    for k, v in res.items(): print(f"{k:55s} {v:9.3f} {v/eager:15.2f}")
    if a.json: json.dump(dict(repeat=a.repeat, median_s=res), open(a.json, 'w'), indent=1)

if __name__ == '__main__': main()
