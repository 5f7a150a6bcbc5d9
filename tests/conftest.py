"テストで共有する道具: コンソールスクリプトを別プロセスで動かし、終了コード・エラーコード・トレースバックのなさを確かめる"
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OFFLINE = {'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
           'MPLBACKEND': 'Agg'}

def cli_exe(name:str) -> str|None:
    "この venv にインストールされたコンソールスクリプトの場所（無ければ None）"
    return shutil.which(name, path=str(BIN)) or shutil.which(name)

def cli_env(lang:str|None=None, **extra) -> dict:
    "子プロセスの環境: オフライン、言語は `lang`（None なら既定の日本語）"
    env = {k:v for k,v in os.environ.items() if k != 'COLAB_DPO_LANG'} | OFFLINE
    if lang: env['COLAB_DPO_LANG'] = lang
    return env | {k:str(v) for k,v in extra.items()}

def run_cli(name:str, *args, lang:str|None=None, env:dict|None=None, timeout:int=900, cwd=None, input:str|None=None):
    "コンソールスクリプト `name` を引数 `args` で動かし、CompletedProcess（stdout/stderr は文字列）を返す"
    exe = cli_exe(name)
    if exe is None: pytest.skip(f'{name} is not installed (pip install -e .)')
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=cli_env(lang, **(env or {})),
                          timeout=timeout, cwd=cwd or ROOT, input=input)

def no_traceback(r):
    "標準出力にも標準エラーにもトレースバックが無い"
    assert 'Traceback' not in r.stderr + r.stdout, r.stderr[-3000:]

def assert_cli_error(r, code:str, returncode:int|None=None):
    "コード付きのエラーで止まった: 0 でない終了コード（`returncode` を指定すればその値）、`code` が出力にあり、トレースバックが無い"
    assert r.returncode != 0 if returncode is None else r.returncode == returncode, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert code in r.stderr + r.stdout, r.stderr[-3000:]
    no_traceback(r)

def assert_cli_ok(r):
    "終了コード 0、トレースバック無し"
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    no_traceback(r)

def jl(rows) -> str:
    "行のリスト → JSONL の文字列（日本語はそのまま）"
    return ''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows)
