"どんな JSON の行・どんなバイト列を渡しても、`colab_dpo.data` がライブラリ自身の例外（ColabDPOError）以外を出さないことを確かめる"
import io, json, math, warnings
from pathlib import Path
import pytest
from hypothesis import given, settings, HealthCheck, strategies as st
from colab_dpo.core import ColabDPOError, ColabDPOWarning
from colab_dpo.data import load_preferences, FORMATS, PreferenceData
from colab_dpo.prompts import load_prompts

KEYS = ['prompt', 'chosen', 'rejected', 'conversations', 'messages', 'instruction', 'input', 'output', 'system', 'history',
        'question', 'response_a', 'response_b', 'score_a', 'score_b', 'label', 'winner', 'responses', 'scores', 'turns',
        'input_text', 'role', 'content', 'from', 'value', 'text', 'Prompt', ' chosen', '質問', '良い回答']
TEXTS = st.one_of(st.text(max_size=30), st.sampled_from(['', '  ', '　', '日本の首都は東京です。', '<|im_start|>user\nやあ', '<s>[INST] やあ [/INST]',
                                                         '\ud800', 'a\udfffb', '\n\nHuman: やあ\n\nAssistant: どうも', 'tie', 'a', 'B', '1', 'nan']))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.integers(), st.floats(allow_nan=True, allow_infinity=True), TEXTS)
MSG = st.fixed_dictionaries({}, optional={k: st.one_of(TEXTS, SCALARS) for k in ('role', 'content', 'from', 'value', 'text')})
VALUES = st.recursive(st.one_of(SCALARS, MSG, st.lists(MSG, max_size=4)),
                      lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.sampled_from(KEYS), c, max_size=4)), max_leaves=12)
ROW = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), VALUES, max_size=8)
ROWS = st.lists(st.one_of(ROW, VALUES), max_size=12)
CFG = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

def check(f, *args, **kw):
    "ColabDPOError なら OK。成功したら、結果が TRL の形にそろっていることも確かめる"
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', ColabDPOWarning)
        try: res = f(*args, **kw)
        except ColabDPOError as e:
            assert e.code.startswith(('data.', 'compat.')), e.code
            return None
    if isinstance(res, PreferenceData):
        r = res.report
        assert r.rows_valid == len(res.dataset) >= 1
        assert r.rows_valid + len(r.issues) + r.ties == r.rows_total, (r.rows_valid, len(r.issues), r.ties, r.rows_total)
        assert res.dataset.column_names == ['prompt', 'chosen', 'rejected']
        for x in res.dataset.select(range(min(3, len(res.dataset)))):
            if r.conversational:
                assert all(isinstance(v, list) and v and all(set(m) == {'role', 'content'} for m in v) for v in x.values())
                assert x['prompt'][-1]['role'] == 'user'
            else: assert all(isinstance(v, str) and v.strip() for v in x.values())
        json.dumps(dict(r), default=str)
        str(res); res._repr_markdown_()
    return res

@CFG
@given(ROWS)
def test_rows_in_memory(rows): check(load_preferences, rows)

@CFG
@given(ROWS, st.sampled_from(list(FORMATS)))
def test_rows_with_format(rows, fmt): check(load_preferences, rows, format=fmt)

@CFG
@given(ROWS, st.sampled_from(['.jsonl', '.json', '.csv', '.tsv']))
def test_rows_as_file(tmp_path_factory, rows, ext):
    p = tmp_path_factory.mktemp('h') / f'rows{ext}'
    if ext == '.jsonl': text = '\n'.join(json.dumps(r, ensure_ascii=False) for r in rows)
    elif ext == '.json': text = json.dumps(rows, ensure_ascii=False)
    else:
        keys = sorted({k for r in rows if isinstance(r, dict) for k in r if k.strip()})[:6] or ['prompt']
        sep = ',' if ext == '.csv' else '\t'
        text = sep.join(keys) + '\n' + ''.join(sep.join(json.dumps(r.get(k), ensure_ascii=False) if isinstance(r, dict) else '' for k in keys) + '\n' for r in rows)
    p.write_bytes(text.encode('utf-8', 'surrogatepass'))
    check(load_preferences, p)

@CFG
@given(st.binary(max_size=400), st.sampled_from(['.jsonl', '.json', '.csv', '.tsv', '.txt', '.parquet', '.jsonl.gz']))
def test_arbitrary_bytes(tmp_path_factory, data, ext):
    p = tmp_path_factory.mktemp('b') / f'x{ext}'
    p.write_bytes(data)
    check(load_preferences, p)

@CFG
@given(st.text(max_size=200), st.sampled_from(['utf-8', 'utf-8-sig', 'cp932', 'utf-16']))
def test_arbitrary_text_in_japanese_encodings(tmp_path_factory, text, enc):
    try: data = text.encode(enc)
    except UnicodeEncodeError: return
    p = tmp_path_factory.mktemp('t') / 'x.jsonl'
    p.write_bytes(data)
    check(load_preferences, p)

@CFG
@given(ROWS)
def test_prompts(rows):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', ColabDPOWarning)
        try: ps = load_prompts(rows)
        except ColabDPOError: return
    assert ps and all(isinstance(p, str) or (isinstance(p, list) and all(set(m) == {'role', 'content'} for m in p)) for p in ps)

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20)), min_size=1, max_size=10))
def test_clean_rows_round_trip(triples):
    "正しい行は 1 文字も変えずに残る（問題と判定された行は理由付きで除かれる）"
    rows = [dict(prompt=p, chosen=c, rejected=r) for p,c,r in triples]
    res = check(load_preferences, rows)
    if res is None: return
    kept = {(x['prompt'], x['chosen'], x['rejected']) for x in res.dataset}
    assert kept <= set(triples)
