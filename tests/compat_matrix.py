#!/usr/bin/env python
"""colab-dpo の互換マトリクス: TRL / transformers の版ごとに venv を作り、`make_dpo_trainer` で小さな DPO + LoRA 学習を回す。

使い方:
    python tests/compat_matrix.py                      # 6 セルすべて（キャッシュした venv があれば再利用）
    python tests/compat_matrix.py --cells trl-0.7.11 trl-1.16.0 --jobs 2 --keep-going
    python tests/compat_matrix.py --list

各セルの venv は `${COLAB_DPO_MATRIX_CACHE:-~/.cache/colab-dpo/matrix}/<cell>` に置き、固定した版（pins）が
スタンプファイルと一致すれば再利用、違えば作り直します。venv の中で `tests/compat_worker.py` を実行し、
ケース（plain / conversational / implicit / 4bit）ごとの結果を JSON で受け取って、セル × ケースの表を出します。
1 セルでも失敗すれば終了コード 1。
"""
from __future__ import annotations
import argparse, json, os, shutil, subprocess, sys, time, hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO/'tests'/'compat_worker.py'
TORCH = 'torch==2.13.0'
# 全セル共通: bitsandbytes（CPU 4-bit は transformers >= 4.53 のセルだけで試す）、rich（TRL 0.8–0.11 が宣言せずに import する）、
# fastcore（colab_dpo.compat が使う）。colab_dpo 本体は --no-deps ではなく PYTHONPATH で渡す（ビルド不要で速い）。
COMMON = ['bitsandbytes==0.50.2', 'rich', 'fastcore>=1.5']

# ../shared/reference/trl_compat_facts.md の「Version sets that install together」
CELLS: dict[str, list[str]] = {
    'trl-0.7.11': ['trl==0.7.11', 'transformers==4.38.2', 'peft==0.9.0', 'accelerate==0.27.2', 'datasets==2.18.0',
                   'numpy<2', 'pyarrow<16', 'huggingface_hub<0.24', 'tokenizers<0.19'],
    'trl-0.11.4': ['trl==0.11.4', 'transformers==4.45.2', 'peft==0.13.2', 'accelerate==0.34.2', 'datasets==3.0.1',
                   'numpy<2', 'pyarrow==17.0.0', 'huggingface_hub<0.26'],
    'trl-0.28.0': ['trl==0.28.0', 'transformers==4.57.6', 'peft==0.18.1', 'accelerate==1.12.0', 'datasets==4.5.0'],
    'trl-0.29.1': ['trl==0.29.1', 'transformers==5.3.0', 'peft==0.18.1', 'accelerate==1.13.0', 'datasets==4.7.0'],
    'trl-1.16.0': ['trl==1.16.0', 'transformers==5.24.0', 'peft==0.21.2', 'accelerate==1.15.0', 'datasets==5.2.0'],
    'trl-1.16.0-tf4': ['trl==1.16.0', 'transformers==4.57.6', 'peft==0.21.2', 'accelerate==1.15.0', 'datasets>=4.7,<5'],
}
CASES = ['plain', 'conversational', 'implicit', '4bit']

def cache_root() -> Path:
    return Path(os.environ.get('COLAB_DPO_MATRIX_CACHE') or Path.home()/'.cache'/'colab-dpo'/'matrix')

def _base_python() -> str:
    "venv の中から呼ばれても、元のインタープリターで venv を作る"
    return getattr(sys, '_base_executable', None) or sys.executable

def _stamp(cell:str) -> dict:
    pins = [TORCH] + CELLS[cell] + COMMON
    return dict(cell=cell, pins=pins, python=f"{sys.version_info.major}.{sys.version_info.minor}",
                digest=hashlib.sha256('\n'.join(pins).encode()).hexdigest()[:16])

def _run(cmd:list, log, env=None, timeout=None) -> int:
    log.write(f"$ {' '.join(map(str, cmd))}\n"); log.flush()
    return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode

def ensure_venv(cell:str, log) -> tuple[Path, bool]:
    "セルの venv を返す。スタンプが一致すれば再利用し、そうでなければ作り直す。(venv, 作り直したか)"
    d = cache_root()/cell
    stamp_f, want = d/'colab-dpo-stamp.json', _stamp(cell)
    if stamp_f.exists() and (d/'bin'/'python').exists():
        try: have = json.loads(stamp_f.read_text())
        except json.JSONDecodeError: have = None
        if have == want: return d, False
    if d.exists(): shutil.rmtree(d)
    d.parent.mkdir(parents=True, exist_ok=True)
    py, env = str(d/'bin'/'python'), {**os.environ, 'PIP_DISABLE_PIP_VERSION_CHECK': '1'}
    env.pop('VIRTUAL_ENV', None); env.pop('PYTHONPATH', None)
    steps = [[_base_python(), '-m', 'venv', str(d)],
             [py, '-m', 'pip', 'install', '-q', TORCH],
             [py, '-m', 'pip', 'install', '-q', TORCH, *CELLS[cell], *COMMON]]
    for cmd in steps:
        if _run(cmd, log, env=env) != 0: raise RuntimeError(f"venv build failed: {' '.join(cmd[:5])}…")
    stamp_f.write_text(json.dumps(want, indent=1))
    return d, True

def run_cell(cell:str, log_dir:Path, timeout:int, build_only:bool=False) -> dict:
    "1 セル: venv を用意し、worker を走らせて結果を返す"
    t0, res = time.time(), dict(cell=cell, cases={}, versions={}, build_s=0., run_s=0., built=False, error=None)
    log_f = log_dir/f"{cell}.log"
    with open(log_f, 'w') as log:
        try: venv, res['built'] = ensure_venv(cell, log)
        except Exception as e:
            res['error'] = f"build: {e}"; res['build_s'] = time.time()-t0; return res
        res['build_s'] = time.time()-t0
        if build_only: return res
        t1, out = time.time(), log_dir/f"{cell}.json"
        env = {**os.environ, 'PYTHONPATH': str(REPO), 'COLAB_DPO_LANG': 'en', 'TOKENIZERS_PARALLELISM': 'false',
               'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'WANDB_DISABLED': 'true',
               'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1'), 'PYTHONWARNINGS': 'ignore'}
        env.pop('VIRTUAL_ENV', None)
        try: rc = _run([str(venv/'bin'/'python'), str(WORKER), '--out', str(out)], log, env=env, timeout=timeout)
        except subprocess.TimeoutExpired: rc = 'timeout'
        res['run_s'] = time.time()-t1
        if out.exists():
            w = json.loads(out.read_text())
            res['cases'], res['versions'] = w.get('cases', {}), w.get('versions', {})
        if rc != 0 and not res['cases']: res['error'] = f"worker exit {rc} (log: {log_f})"
        elif rc not in (0, 1): res['error'] = f"worker exit {rc} (log: {log_f})"
    return res

def _ok(res:dict) -> bool:
    return res['error'] is None and bool(res['cases']) and all(c['status'] in ('ok', 'n/a') for c in res['cases'].values())

def print_table(results:list[dict]):
    w = max(len(r['cell']) for r in results)+2
    head = f"{'cell':<{w}}{'trl/transformers':<20}" + ''.join(f"{c:<16}" for c in CASES) + 'build  run'
    print('\n' + head); print('-'*len(head))
    for r in results:
        v = r['versions']
        vs = f"{v.get('trl','?')}/{v.get('transformers','?')}"
        cols = []
        for c in CASES:
            x = r['cases'].get(c)
            if r['error']: s = '✗ ' + ('build' if r['error'].startswith('build') else 'error')
            elif x is None: s = '✗ missing'
            else: s = {'ok': '✓', 'n/a': '– n/a', 'fail': '✗ fail'}.get(x['status'], x['status'])
            cols.append(f"{s:<16}")
        print(f"{r['cell']:<{w}}{vs:<20}" + ''.join(cols) + f"{r['build_s']:5.0f}s {r['run_s']:4.0f}s" + (' (cached)' if not r['built'] and not r['error'] else ''))
    reasons = [(r['cell'], c, x) for r in results for c, x in r['cases'].items() if x['status'] in ('fail', 'n/a')]
    errs = [(r['cell'], r['error']) for r in results if r['error']]
    if reasons or errs: print()
    for cell, c, x in reasons: print(f"  {cell} / {c}: {'✗' if x['status']=='fail' else '–'} {x.get('reason','')}")
    for cell, e in errs: print(f"  {cell}: ✗ {e}")

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description='colab-dpo compat matrix (one venv per TRL/transformers set)')
    p.add_argument('--cells', nargs='+', choices=list(CELLS), default=list(CELLS), help='cells to run (default: all)')
    p.add_argument('--jobs', type=int, default=1, help='cells in parallel (default 1)')
    p.add_argument('--keep-going', action='store_true', help='run the remaining cells after a failure')
    p.add_argument('--timeout', type=int, default=900, help='seconds per worker run')
    p.add_argument('--log-dir', type=Path, default=None, help='where logs and worker JSON go (default: a temp dir)')
    p.add_argument('--list', action='store_true', help='print the cells and their pins, then exit')
    p.add_argument('--build-only', action='store_true', help='only build (or check) the cached venvs')
    a = p.parse_args(argv)
    if a.list:
        for c in CELLS: print(c + ': ' + ' '.join([TORCH] + CELLS[c] + COMMON))
        return 0
    import tempfile
    log_dir = a.log_dir or Path(tempfile.mkdtemp(prefix='colab-dpo-matrix-'))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"compat matrix: {len(a.cells)} cell(s), jobs={a.jobs}, cache={cache_root()}, logs={log_dir}", flush=True)
    t0, results, stop = time.time(), {}, False
    def one(cell):
        if stop: return None
        r = run_cell(cell, log_dir, a.timeout, a.build_only)
        status = '✓' if _ok(r) else '✗'
        print(f"  {status} {cell}: build {r['build_s']:.0f}s{' (cached)' if not r['built'] and not r['error'] else ''}, "
              f"run {r['run_s']:.0f}s" + (f" — {r['error']}" if r['error'] else ''), flush=True)
        return r
    with ThreadPoolExecutor(max(1, a.jobs)) as ex:
        futs = {c: ex.submit(one, c) for c in a.cells}
        for c, f in futs.items():
            r = f.result()
            if r is None: continue
            results[c] = r
            if not _ok(r) and not a.keep_going: stop = True
    ordered = [results[c] for c in a.cells if c in results]
    if a.build_only: return 0 if all(r['error'] is None for r in ordered) else 1
    print_table(ordered)
    n_ok = sum(_ok(r) for r in ordered)
    print(f"\n{n_ok}/{len(a.cells)} cells green in {time.time()-t0:.0f}s" + (f" ({len(a.cells)-len(ordered)} not run)" if len(ordered) < len(a.cells) else ''))
    return 0 if n_ok == len(a.cells) else 1

if __name__ == '__main__': sys.exit(main())
