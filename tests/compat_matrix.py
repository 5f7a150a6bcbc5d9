#!/usr/bin/env python
"""colab-dpo の互換マトリクス: TRL / transformers の版ごとに venv を作り、`make_dpo_trainer` で小さな DPO + LoRA 学習を回す。

使い方:
    python tests/compat_matrix.py                      # 6 セルすべて（キャッシュした venv があれば再利用）
    python tests/compat_matrix.py --cells trl-0.7.11 trl-1.16.0 --jobs 2 --keep-going
    python tests/compat_matrix.py --list

各セルの venv は `${COLAB_DPO_MATRIX_CACHE:-~/.cache/colab-dpo/matrix}/<cell>` に置き、固定した版（pins）が
スタンプファイル（colab-dpo-stamp.json）と一致すれば再利用、違えば作り直します（キャッシュが無くても最初から作れる）。
作り方: `python -m venv --without-pip`、このスクリプトを動かす python の pip を `--python` で venv に向けて
torch==2.13.0 とセルの pins（+ bitsandbytes、rich、fastcore）を入れる。torch は全セルで同じなので一度だけ
`<cache>/_shared/torch-2.13.0-*`（bitsandbytes・sympy・networkx も）に展開し、各 venv から .pth で共有します。`--no-compile` で
入れるので、.pyc は import したものだけがその時に作られます。
colab_dpo 自体は PYTHONPATH で渡します（venv ごとのビルドが要らない）。

venv の中で `tests/compat_worker.py` を実行し、ケース（plain / conversational / implicit / 4bit / orpo / simpo / kto）ごとの結果を JSON で
受け取って、セル × ケースの表を出します。1 セルでも失敗すれば終了コード 1。
"""
from __future__ import annotations
import argparse, json, os, shutil, subprocess, sys, threading, time, hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO/'tests'/'compat_worker.py'
TORCH = 'torch==2.13.0'
# 全セルで同じもの（torch と、大きくて版の揃う bitsandbytes・sympy・networkx）は一度だけ共有フォルダへ展開し、各 venv から
# .pth で見せる。pip はそれを「入っている」と見なし、足りない依存だけを各 venv に入れる。
SHARED = [TORCH, 'bitsandbytes==0.50.2', 'sympy>=1.13.3', 'mpmath', 'networkx']
# 全セル共通: bitsandbytes（CPU 4-bit は transformers >= 4.53 のセルだけで試す）、rich（TRL 0.8–0.11 が宣言せずに import する）、
# fastcore（colab_dpo.compat が使う）。
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
CASES = ['plain', 'conversational', 'implicit', '4bit', 'orpo', 'simpo', 'kto']

def cache_root() -> Path:
    return Path(os.environ.get('COLAB_DPO_MATRIX_CACHE') or Path.home()/'.cache'/'colab-dpo'/'matrix')

def _base_python() -> str:
    "venv の中から呼ばれても、元のインタープリターで venv を作る"
    return getattr(sys, '_base_executable', None) or sys.executable

def _stamp(cell:str) -> dict:
    pins = [TORCH] + CELLS[cell] + COMMON
    return dict(cell=cell, pins=pins, python=f"{sys.version_info.major}.{sys.version_info.minor}", torch_dir=str(torch_dir()),
                digest=hashlib.sha256('\n'.join(pins).encode()).hexdigest()[:16])

def _run(cmd:list, log, env=None, timeout=None) -> int:
    t0 = time.time()
    log.write(f"$ {' '.join(map(str, cmd))}\n"); log.flush()
    rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
    log.write(f"# exit {rc} after {time.time()-t0:.0f}s\n"); log.flush()
    return rc

def _pip_env() -> dict:
    env = {**os.environ, 'PIP_DISABLE_PIP_VERSION_CHECK': '1'}
    for k in ('VIRTUAL_ENV', 'PYTHONPATH', 'PIP_TARGET', 'PIP_PREFIX', 'PIP_USER'): env.pop(k, None)
    return env

def torch_dir() -> Path:
    return cache_root()/'_shared'/(TORCH.replace('==', '-') + '-' + hashlib.sha256('\n'.join(SHARED).encode()).hexdigest()[:8])

_torch_lock = threading.Lock()
def ensure_torch(log) -> Path:
    """SHARED（torch など 6 セルで同じ版のもの）を一度だけ展開する。各 venv は .pth でこれを見る（約 900 MB を 6 回書かずに済む）。
    残りの依存は各セルの pip が通常どおり入れ、venv の site-packages が .pth より先に来るので、セル側の版が優先される。"""
    d = torch_dir()
    with _torch_lock:
        if (d/'colab-dpo-stamp.json').exists(): return d
        tmp = d.with_name(d.name + '.partial')
        if tmp.exists(): shutil.rmtree(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, '-m', 'pip', 'install', '-q', '--no-compile', '--no-deps', '--target', str(tmp), *SHARED]
        if _run(cmd, log, env=_pip_env()) != 0: raise RuntimeError(f"shared torch install failed: {' '.join(cmd)}")
        if d.exists(): shutil.rmtree(d)
        tmp.rename(d)
        (d/'colab-dpo-stamp.json').write_text(json.dumps(dict(pins=SHARED), indent=1))
        return d

def ensure_venv(cell:str, log) -> tuple[Path, bool]:
    "セルの venv を返す。スタンプが一致すれば再利用し、そうでなければ作り直す。(venv, 作り直したか)"
    tdir = ensure_torch(log)
    d = cache_root()/cell
    stamp_f, want = d/'colab-dpo-stamp.json', _stamp(cell)
    if stamp_f.exists() and (d/'bin'/'python').exists():
        try: have = json.loads(stamp_f.read_text())
        except json.JSONDecodeError: have = None
        if have == want: return d, False
    if d.exists(): shutil.rmtree(d)
    d.parent.mkdir(parents=True, exist_ok=True)
    py, env = str(d/'bin'/'python'), _pip_env()
    # pip は venv に入れず、元のインタープリターの pip を `--python` で venv に向ける（ensurepip の 1 分近くを省く）
    if _run([_base_python(), '-m', 'venv', '--without-pip', str(d)], log, env=env) != 0: raise RuntimeError('python -m venv failed')
    site = subprocess.run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], capture_output=True, text=True,
                          env=env, check=True).stdout.strip()
    Path(site, '_colab_dpo_shared_torch.pth').write_text(str(tdir) + '\n')
    cmd = [sys.executable, '-m', 'pip', '--python', py, 'install', '-q', '--no-compile', TORCH, *CELLS[cell], *COMMON]
    if _run(cmd, log, env=env) != 0: raise RuntimeError(f"pip install failed for {cell} (see log)")
    stamp_f.write_text(json.dumps(want, indent=1))
    return d, True

def run_cell(cell:str, log_dir:Path, timeout:int, build_only:bool=False) -> dict:
    "1 セル: venv を用意し、worker を走らせて結果を返す"
    log_f = log_dir/f"{cell}.log"
    t0, res = time.time(), dict(cell=cell, cases={}, versions={}, build_s=0., run_s=0., built=False, error=None, log=str(log_f))
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

def _tail(path:Path, n:int=6) -> str:
    lines = [l for l in path.read_text(errors='replace').splitlines() if l.strip() and not l.startswith('WARNING: Location')]
    return '\n'.join('      ' + l[:200] for l in lines[-n:])

def _cell_mark(r:dict, c:str) -> str:
    x = r['cases'].get(c)
    if r['error']: return '✗ ' + ('build' if r['error'].startswith('build') else 'error')
    if x is None: return '✗ missing'
    return {'ok': f"✓ {x.get('seconds', 0):.0f}s", 'n/a': '– n/a', 'fail': '✗ fail'}.get(x['status'], x['status'])

def print_table(results:list[dict]):
    "セル × ケースの表と、失敗・対象外の理由"
    w = max(len(r['cell']) for r in results) + 2
    head = f"{'cell':<{w}}{'trl / transformers':<22}" + ''.join(f"{c:<16}" for c in CASES) + 'build   run'
    print('\n' + head); print('-'*len(head))
    for r in results:
        v = r['versions']
        vs = f"{v.get('trl') or '?'} / {v.get('transformers') or '?'}"
        cached = ' (cached)' if not r['built'] and not r['error'] else ''
        print(f"{r['cell']:<{w}}{vs:<22}" + ''.join(f"{_cell_mark(r, c):<16}" for c in CASES)
              + f"{r['build_s']:5.0f}s {r['run_s']:5.0f}s{cached}")
    notes = [f"  {r['cell']} / {c}: {'✗' if x['status'] == 'fail' else '–'} {x.get('reason', '')}"
             for r in results for c, x in r['cases'].items() if x['status'] in ('fail', 'n/a')]
    notes += [f"  {r['cell']}: ✗ {r['error']}\n{_tail(Path(r['log']))}" for r in results if r['error']]
    if notes: print('\n' + '\n'.join(notes))

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description='colab-dpo compat matrix: one venv per TRL/transformers set, tiny DPO + LoRA in each')
    p.add_argument('--cells', nargs='+', choices=list(CELLS), default=list(CELLS), metavar='CELL',
                   help=f"cells to run (default: all of {', '.join(CELLS)})")
    p.add_argument('--jobs', type=int, default=1, help='cells built and run in parallel (default 1)')
    p.add_argument('--keep-going', action='store_true', help='run the remaining cells after a failure')
    p.add_argument('--timeout', type=int, default=900, help='seconds allowed for one worker run (default 900)')
    p.add_argument('--log-dir', type=Path, default=None, help='where logs and worker JSON go (default: a temp dir)')
    p.add_argument('--list', action='store_true', help='print the cells and their pins, then exit')
    p.add_argument('--build-only', action='store_true', help='only build (or reuse) the venvs, run nothing')
    a = p.parse_args(argv)
    if a.list:
        for c in CELLS: print(c + ': ' + ' '.join([TORCH] + CELLS[c] + COMMON))
        return 0
    import tempfile
    log_dir = a.log_dir or Path(tempfile.mkdtemp(prefix='colab-dpo-matrix-'))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"compat matrix: {len(a.cells)} cell(s), jobs={a.jobs}, cache={cache_root()}, logs={log_dir}", flush=True)
    t0, results, stop = time.time(), {}, threading.Event()
    def one(cell):
        if stop.is_set(): return None
        r = run_cell(cell, log_dir, a.timeout, a.build_only)
        ok = r['error'] is None if a.build_only else _ok(r)
        if not ok and not a.keep_going: stop.set()
        cached = ' (cached)' if not r['built'] and not r['error'] else ''
        print(f"  {'✓' if ok else '✗'} {cell}: build {r['build_s']:.0f}s{cached}" + ('' if a.build_only else f", run {r['run_s']:.0f}s")
              + (f" — {r['error']}" if r['error'] else ''), flush=True)
        return r
    with ThreadPoolExecutor(max(1, a.jobs)) as ex:
        futs = {c: ex.submit(one, c) for c in a.cells}
        results = {c: f.result() for c, f in futs.items()}
    ordered = [results[c] for c in a.cells if results[c] is not None]
    if a.build_only: return 0 if len(ordered) == len(a.cells) and all(r['error'] is None for r in ordered) else 1
    print_table(ordered)
    n_ok = sum(_ok(r) for r in ordered)
    marks = [x['status'] for r in ordered for x in r['cases'].values()]
    n_fail = marks.count('fail') + sum(len(CASES) for r in ordered if r['error'])
    skipped = f" ({len(a.cells) - len(ordered)} cell(s) not run after a failure; use --keep-going)" if len(ordered) < len(a.cells) else ''
    print(f"\n{n_ok}/{len(a.cells)} cells green in {time.time() - t0:.0f}s{skipped}")
    print(f"matrix: {marks.count('ok')} passed, {n_fail} failed, {marks.count('n/a')} skipped")
    return 0 if n_ok == len(a.cells) else 1

if __name__ == '__main__': sys.exit(main())
