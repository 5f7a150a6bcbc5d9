#!/usr/bin/env python
"""ノートブックをその場で実行し、ドキュメントに載せる出力を保存する（CPU・オフラインのセルだけ）。

`#| gpu`・`#| net`・`#| notest`・`#| eval: false` のセル（と `--skip` に挙げたフラグ、既定では `#| slow` も）は実行せず、
出力を空にする。最後に nbdev-clean を通すので、実行回数やメタデータの揺れは残らない（CI の「export/clean で何も
変わらない」検査はそのまま通る）。セルが例外を出したら、そのノートブックは書き戻さずに失敗で終わる。

使い方: `python tools/run_notebooks.py nbs/00a_tiny.ipynb [--slow] [--timeout 600]`"""
import argparse, os, re, subprocess, sys, time
from pathlib import Path

SKIP = {'gpu', 'net', 'notest'}
_DIR = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

def flags(src:str) -> dict:
    "セルの先頭の `#|` 指示を {名前: 値} で返す"
    out = {}
    for l in src.splitlines():
        if not l.strip(): continue
        m = _DIR.match(l)
        if not m: break
        out[m.group(1)] = m.group(2)
    return out

def skipped(cell, skip:set) -> bool:
    "このセルを実行しないか（コード以外、GPU/ネット/slow などのフラグ、eval: false、ノートブック末尾の export）"
    if cell.cell_type != 'code': return True
    d = flags(cell.source)
    return bool(skip & set(d)) or d.get('eval', '').lower() == 'false' or 'nbdev_export()' in cell.source

def run_nb(path:Path, skip:set, timeout:int|None) -> tuple[int, int]:
    "1 冊を実行して出力を書き戻す。(実行したセル数, 飛ばしたセル数) を返す。失敗なら例外"
    from fastcore.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    nb = read_nb(path)
    cwd = os.getcwd(); os.chdir(path.parent)   # nbdev-test と同じく、ノートブックのフォルダで実行する
    try:
        k = CaptureShell(path)
        ran = 0
        def pre(c):
            nonlocal ran
            if skipped(c, skip):
                if c.cell_type == 'code': c.outputs, c.execution_count = [], None
                return True
            ran += 1; return False
        k.run_all(nb, exc_stop=True, preproc=pre, cell_timeout=timeout)
    finally: os.chdir(cwd)
    write_nb(nb, path)
    return ran, sum(c.cell_type == 'code' for c in nb.cells) - ran

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='+', type=Path, help='実行するノートブック')
    p.add_argument('--slow', action='store_true', help='`#| slow` のセルも実行する')
    p.add_argument('--skip', default='', help='ほかに飛ばすフラグ（カンマ区切り）')
    p.add_argument('--timeout', type=int, default=600, help='1 セルの制限時間（秒）')
    a = p.parse_args(argv)
    skip = SKIP | ({'slow'} if not a.slow else set()) | {s for s in a.skip.split(',') if s}
    os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('MPLBACKEND', 'Agg')
    os.environ.setdefault('TQDM_DISABLE', '1')   # 進み具合のバーは出力に残さない
    failed = 0
    for nb in a.notebooks:
        t = time.time()
        try: ran, sk = run_nb(nb.resolve(), skip, a.timeout)
        except Exception as e:
            failed += 1; print(f'FAIL {nb}: {type(e).__name__}: {e}', file=sys.stderr); continue
        print(f'ok   {nb}: {ran} cells run, {sk} skipped ({time.time()-t:.0f} s)')
    # 実行回数とメタデータを消す（出力は残る）。nbdev-clean は書き戻したノートブックだけに
    for nb in a.notebooks: subprocess.run(['nbdev-clean', '--fname', str(nb)], check=True)
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main())
