"""README.md は nbs/index.ipynb の写し（Quarto の無い環境では nbdev-readme が使えないため、ここで生成・照合する）。

更新: `python tests/test_readme.py --write`"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def render_readme() -> str:
    "index.ipynb の markdown セルを順に連結する（コードセルは README に出さない）"
    nb = json.loads((ROOT/'nbs'/'index.ipynb').read_text(encoding='utf-8'))
    cells = [''.join(c['source']).strip() for c in nb['cells'] if c['cell_type']=='markdown']
    return '\n\n'.join(cells) + '\n'

def test_readme_mirrors_index():
    assert (ROOT/'README.md').read_text(encoding='utf-8') == render_readme(), "README.md が古い: python tests/test_readme.py --write"

def test_readme_has_demo_and_test_commands():
    txt = (ROOT/'README.md').read_text(encoding='utf-8')
    assert 'colab-dpo-demo' in txt
    ci = (ROOT/'.ci'/'run').read_text(encoding='utf-8')
    test_cmd = 'nbdev-test --flags slow --n-workers 2 && python -m pytest -q tests'
    assert test_cmd in txt and test_cmd in ci, "README と .ci/run のテストコマンドが一致していない"

if __name__ == '__main__' and '--write' in sys.argv: (ROOT/'README.md').write_text(render_readme(), encoding='utf-8')
