"`colab-dpo-check-data` を別プロセスで動かし、終了コード・JSON・日本語の出力・トレースバックのなさを確かめる"
import json, subprocess, sys, time
import pytest
from colab_dpo.tiny import fixture_path
from colab_dpo.core import msg
from colab_dpo.data import _export_line
from conftest import run_cli, cli_exe, no_traceback, assert_cli_error, jl

EXE = cli_exe('colab-dpo-check-data')
pytestmark = pytest.mark.skipif(EXE is None, reason='colab-dpo-check-data is not installed (pip install -e .)')

ROWS = [dict(prompt='日本の首都はどこですか？', chosen='日本の首都は東京です。', rejected='大阪だと思います。'),
        dict(prompt='おすすめの朝食を教えてください。', chosen='ご飯と味噌汁の和朝食がおすすめです。', rejected='朝は食べなくていいです。')]

def run(*args, lang=None): return run_cli('colab-dpo-check-data', *args, lang=lang, timeout=300)

@pytest.fixture
def good(tmp_path): p = tmp_path/'good.jsonl'; p.write_text(jl(ROWS), encoding='utf-8'); return p

@pytest.fixture
def partly_bad(tmp_path):
    p = tmp_path/'partly_bad.jsonl'
    p.write_text(jl(ROWS) + '{"prompt": "壊れた行"\n' + jl([dict(prompt='挨拶', chosen='やあ', rejected='やあ')]), encoding='utf-8'); return p

@pytest.fixture
def unusable(tmp_path): p = tmp_path/'unusable.jsonl'; p.write_text('{"question": 1}\n{"prompt": "x"}\n', encoding='utf-8'); return p

def test_help_is_fast_and_light():
    t = time.perf_counter(); r = run('--help'); dt = time.perf_counter() - t
    assert r.returncode == 0 and '--max-length' in r.stdout and '--json' in r.stdout and '--strict' in r.stdout
    assert dt < 5, dt  # 共有の遅い CI でも落ちない上限。重い import をしないことは下で確かめる
    code = ("import sys, colab_dpo.data; "
            "print([m for m in ('torch','transformers','trl','datasets','pandas','matplotlib','numpy','pyarrow') if m in sys.modules])")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60).stdout.strip()
    assert out == '[]', f'heavy modules imported at module level: {out}'

def test_good_file_exit_0_japanese(good):
    r = run(good)
    assert r.returncode == 0, r.stderr
    assert '選好データ' in r.stdout and '2 行中 2 行' in r.stdout
    no_traceback(r)

def test_english(good):
    r = run(good, lang='en')
    assert r.returncode == 0 and 'Preference data' in r.stdout and '選好' not in r.stdout

def test_problems_exit_0_but_1_under_strict(partly_bad):
    r = run(partly_bad)
    assert r.returncode == 0, r.stderr
    assert 'data.unparsable_line' in r.stdout and 'data.identical_pair' in r.stdout
    r = run(partly_bad, '--strict')
    assert r.returncode == 1
    no_traceback(r)

def test_json_output(partly_bad):
    r = run(partly_bad, '--json')
    assert r.returncode == 0
    d = json.loads(r.stdout)   # JSON がちょうど 1 つ
    assert (d['rows_total'], d['rows_valid'], d['format']) == (4, 2, 'standard')
    assert isinstance(d['stats'], dict) and d['stats']['chars']['prompt']['max'] > 0
    assert [(i['code'], i['line'], i['field']) for i in d['issues']] == [('data.unparsable_line', 3, None), ('data.identical_pair', 4, 'chosen')]
    assert all(i['message'] for i in d['issues'])
    assert run(partly_bad, '--json', '--strict').returncode == 1

def test_unusable_exit_1(unusable):
    assert_cli_error(run(unusable), 'data.', 1)
    r = run(unusable, '--json')
    assert r.returncode == 1
    d = json.loads(r.stdout)
    assert d['rows_valid'] == 0 and d['error']['code'] in ('data.no_usable_rows', 'data.unknown_format')

def test_empty_and_undecodable_files(tmp_path):
    (tmp_path/'empty.jsonl').write_bytes(b'')
    (tmp_path/'bin.jsonl').write_bytes(bytes(range(256)) * 16)
    for f,code in (('empty.jsonl', 'data.no_usable_rows'), ('bin.jsonl', 'data.undecodable')):
        assert_cli_error(run(tmp_path/f), code, 1)

def test_usage_errors_exit_2(good, tmp_path):
    for args in [(), (good, '--max-length', 'abc'), (tmp_path/'missing.jsonl',), (good, '--format', 'nonsense'),
                 (good, '--max-length', '0'), (good, '--mapping', 'nonsense')]:
        r = run(*args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        no_traceback(r)

def test_shift_jis_csv_and_mapping(tmp_path):
    p = tmp_path/'sjis.csv'
    p.write_bytes(('質問,良い,悪い\r\n' + ''.join(f'{r["prompt"]},{r["chosen"]},{r["rejected"]}\r\n' for r in ROWS)).encode('cp932'))
    r = run(p, '--mapping', '良い=chosen,悪い=rejected', '--json')
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d['rows_valid'] == 2 and d['encodings'][str(p)] == 'cp932' and d['columns']['良い'] == 'chosen'

def test_tokenizer_stats(good):
    tok = fixture_path('tinyswallow_tokenizer')
    if tok is None: pytest.skip('shared fixtures are absent')
    r = run(good, '--tokenizer', tok, '--max-length', 12, '--json')
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d['stats']['tokens']['prompt']['max'] > 0 and 0 <= d['stats']['truncated_ratio'] <= 1
    assert d['stats']['length_basis'] == 'tokens'

def read_jsonl(p) -> list: return [json.loads(l) for l in p.read_text(encoding='utf-8').splitlines()]

def test_export_train_and_eval(tmp_path):
    "--export と --eval-export: 行数が合い、評価の prompt は学習に無く、足りないフォルダーは作られる"
    from colab_dpo.data import sample_path
    tr, ev = tmp_path/'out'/'pairs.jsonl', tmp_path/'out'/'eval.jsonl'
    r = run(sample_path(), '--export', tr, '--eval-export', ev, '--eval-ratio', 0.2)
    assert r.returncode == 0, r.stderr
    a, b = read_jsonl(tr), read_jsonl(ev)
    assert (len(a) + len(b), len(b)) == (160, 32)
    assert not {x['prompt'] for x in a} & {x['prompt'] for x in b}
    assert list(a[0]) == ['prompt', 'chosen', 'rejected']
    assert r.stdout.strip().splitlines()[-1] == _export_line(dict(path=str(tr), rows=128, eval_path=str(ev), eval_rows=32, skipped=0))
    assert sorted(p.name for p in tr.parent.iterdir()) == ['eval.jsonl', 'pairs.jsonl']   # 一時ファイルは残らない

def test_export_only_checked_rows(partly_bad, tmp_path):
    "検査で除いた行は書かない。書いた行は UTF-8 の JSONL（日本語はそのまま）で、数を示す"
    out = tmp_path/'pairs.jsonl'
    r = run(partly_bad, '--export', out)
    assert r.returncode == 0, r.stderr
    assert out.read_text(encoding='utf-8') == jl(ROWS)
    assert r.stdout.strip().splitlines()[-1] == _export_line(dict(path=str(out), rows=2, eval_path=None, eval_rows=0, skipped=2))

def test_export_refuses_existing_file(good, tmp_path):
    "既にある書き出し先: 終了コード 2 とコード、何も書かない（もう一方の書き出し先も）。--overwrite なら置き換える"
    tr, ev = tmp_path/'pairs.jsonl', tmp_path/'eval.jsonl'
    ev.write_text('old\n', encoding='utf-8')
    r = run(good, '--export', tr, '--eval-export', ev)
    assert_cli_error(r, 'data.export_exists', 2)
    assert str(ev) in r.stderr and '--overwrite' in r.stderr
    assert not tr.exists() and ev.read_text(encoding='utf-8') == 'old\n'
    r = run(good, '--export', tr, '--eval-export', ev, '--overwrite')
    assert r.returncode == 0, r.stderr
    assert read_jsonl(tr) + read_jsonl(ev) in (ROWS, ROWS[::-1])

def test_export_json(good, tmp_path):
    "--json: JSON 1 つに export（to_jsonl の戻り値）が加わる"
    out = tmp_path/'pairs.jsonl'
    r = run(good, '--export', out, '--json')
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d['export'] == dict(path=str(out), rows=2, eval_path=None, eval_rows=0, skipped=0)
    assert 'export' not in json.loads(run(good, '--json').stdout)

def test_no_export_when_unusable(partly_bad, unusable, tmp_path):
    "使えないと判定したデータ（終了コード 1）は書き出さない"
    out = tmp_path/'pairs.jsonl'
    r = run(partly_bad, '--export', out, '--strict')
    assert r.returncode == 1 and not out.exists()
    assert r.stdout.strip().splitlines()[-1] == msg('data.export.strict')
    r = run(partly_bad, '--export', out, '--strict', '--json')
    assert r.returncode == 1 and json.loads(r.stdout)['export'] is None and not out.exists()
    r = run(unusable, '--export', out, '--json')
    assert r.returncode == 1 and json.loads(r.stdout)['export'] is None and not out.exists()

def test_export_usage_errors_exit_2(good, tmp_path):
    "書き出しの使い方の誤り: コード付きで終了コード 2、何も書かない"
    out = tmp_path/'pairs.jsonl'
    for args,code in [(('--eval-export', out), 'data.bad_argument'), (('--export', out, '--eval-export', out), 'data.export_same_path'),
                      (('--export', tmp_path), 'data.export_is_dir'), (('--export', out, '--eval-export', tmp_path/'e.jsonl', '--eval-ratio', 1.5), 'data.bad_argument')]:
        assert_cli_error(run(good, *args), code, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['good.jsonl']
