"`colab-dpo-check-data` を別プロセスで動かし、終了コード・JSON・日本語の出力・トレースバックのなさを確かめる"
import json, subprocess, sys, time
import pytest
from colab_dpo.tiny import fixture_path
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
