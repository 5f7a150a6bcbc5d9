"Each registered dataset's schema, exercised offline through `load_preferences` with small files written here (invented rows)."
import json, warnings
from pathlib import Path
import pytest
from colab_dpo.core import ColabDPOWarning
from colab_dpo.data import load_preferences
from colab_dpo.registry import DATASETS, get_dataset

FIX = Path(__file__).resolve().parents[1]/'..'/'shared'/'fixtures'/'tinyswallow_tokenizer'

def ans(t): return [dict(role='assistant', content=t)]   # 会話の形では応答も assistant のメッセージになる
def msgs(*turns): return [dict(role=('user', 'assistant')[i % 2], content=t) for i,t in enumerate(turns)]

# Rows in each entry's documented schema (`DatasetEntry.columns`, `format`), written by hand: (row, expected prompt, chosen, rejected)
ROWS = {
 'hh-rlhf-ja': [
  (dict(prompt=msgs('味噌汁の作り方を教えてください。'), chosen='だしを取り、具を煮てから火を止めて味噌を溶きます。', rejected='知りません。'),
   msgs('味噌汁の作り方を教えてください。'), ans('だしを取り、具を煮てから火を止めて味噌を溶きます。'), ans('知りません。')),
  (dict(prompt=msgs('京都でおすすめの季節は？', '秋の紅葉が有名です。', '混雑を避けるには？'), chosen='早朝に出かけると比較的すいています。', rejected='行かないことです。'),
   msgs('京都でおすすめの季節は？', '秋の紅葉が有名です。', '混雑を避けるには？'), ans('早朝に出かけると比較的すいています。'), ans('行かないことです。'))],
 'chatbot-arena-ja': [
  (dict(prompt='俳句の季語とは何ですか？', chosen='季節を表すために句に詠み込む言葉です。例えば「桜」は春の季語です。', rejected='五七五のことです。'),
   '俳句の季語とは何ですか？', '季節を表すために句に詠み込む言葉です。例えば「桜」は春の季語です。', '五七五のことです。')],
 'shisa-dpo': [
  (dict(prompt='「おもてなし」を英語で説明してください。', chosen='"Omotenashi" means wholehearted hospitality that anticipates a guest\'s needs.', rejected='Hello.'),
   '「おもてなし」を英語で説明してください。', '"Omotenashi" means wholehearted hospitality that anticipates a guest\'s needs.', 'Hello.')],
 'synthetic-pref-ja-32b': [
  (dict(prompt='梅雨の時期に洗濯物を早く乾かすコツは？', chosen='除湿機と扇風機を併用し、衣類の間隔を空けて干します。', rejected='晴れるまで待ちましょう。'),
   '梅雨の時期に洗濯物を早く乾かすコツは？', '除湿機と扇風機を併用し、衣類の間隔を空けて干します。', '晴れるまで待ちましょう。')],
 'synthetic-pref-ja-191k': [
  (dict(prompt='新幹線で富士山がよく見えるのはどちら側の席ですか？', chosen='東京から新大阪へ向かう場合、進行方向右側の E 席です。', rejected='どちらでも同じです。'),
   '新幹線で富士山がよく見えるのはどちら側の席ですか？', '東京から新大阪へ向かう場合、進行方向右側の E 席です。', 'どちらでも同じです。')],
 'dpo-ja-45k': [
  (dict(prompt='敬語の「いただく」と「くださる」の違いは？', chosen='「いただく」は自分がもらう謙譲語、「くださる」は相手がくれる尊敬語です。', rejected='同じ意味です。'),
   '敬語の「いただく」と「くださる」の違いは？', '「いただく」は自分がもらう謙譲語、「くださる」は相手がくれる尊敬語です。', '同じ意味です。')],
}

def write(folder:Path, ext:str, rows:list) -> Path:
    "rows を Hub と同じ種類のファイルにする（jsonl / json / parquet）"
    folder.mkdir(parents=True, exist_ok=True)
    f = folder/f'train.{ext}'
    if ext == 'jsonl': f.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows), encoding='utf-8')
    elif ext == 'json': f.write_text(json.dumps(rows, ensure_ascii=False), encoding='utf-8')
    else:
        import pandas as pd
        pd.DataFrame(rows).to_parquet(f)
    return f

def test_every_entry_has_rows():
    assert set(ROWS) == set(DATASETS)

@pytest.mark.parametrize('name', sorted(DATASETS))
def test_schema_loads_by_short_name(name, tmp_path, monkeypatch):
    "短い名前 → Hub の ID → （ここではローカルの同名フォルダー）→ 登録簿の読み方で prompt/chosen/rejected"
    e, cases = get_dataset(name), ROWS[name]
    for row,*_ in cases: assert set(row) == set(e.columns) | set((e.mapping or {}).keys())   # 書いた行は登録した列の形
    write(tmp_path/e.id, e.file_type, [r for r,*_ in cases])
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter('error', ColabDPOWarning)
        data = load_preferences(name, **{k:v for k,v in e.load_kwargs().items() if k != 'split'})
    assert data.report['format'] == e.format
    assert data.report['dataset']['license'] == e.license and data.report['dataset']['id'] == e.id
    got = data.dataset.to_list()
    assert [(g['prompt'], g['chosen'], g['rejected']) for g in got[:len(cases)]] == [tuple(c[1:]) for c in cases]

@pytest.mark.parametrize('name', sorted(DATASETS))
def test_seeded_sample(name, tmp_path, monkeypatch):
    e, cases = get_dataset(name), ROWS[name]
    rows = [{**r, 'chosen': r['chosen'] + f'（{i}）'} for i in range(12) for r,*_ in cases[:1]]
    write(tmp_path/e.id, e.file_type, rows)
    monkeypatch.chdir(tmp_path)
    a, b = (load_preferences(name, max_rows=4, seed=s) for s in (0, 0))
    assert len(a.dataset) == 4 and a.dataset['chosen'] == b.dataset['chosen']
    assert a.report['sampled'] == dict(max_rows=4, seed=0, rows_before=12)

def test_unverified_columns_fall_back_to_detection(tmp_path):
    "列が未確認の項目は形式を決め打ちしないので、よくある別の形（ShareGPT、Alpaca）でも読める"
    sg = dict(conversations=[{'from': 'human', 'value': '桜の開花はいつ頃ですか？'}], chosen='東京では例年 3 月下旬です。', rejected='冬です。')
    d1 = load_preferences([sg], **get_dataset('shisa-dpo').load_kwargs())
    assert d1.report['format'] == 'sharegpt' and d1.dataset[0]['chosen'][0]['content'] == '東京では例年 3 月下旬です。'
    al = dict(instruction='次の文を敬語にしてください。', input='明日行く。', chosen='明日伺います。', rejected='明日行くよ。')
    d2 = load_preferences([al], **get_dataset('synthetic-pref-ja-32b').load_kwargs())
    assert d2.report['format'] == 'alpaca' and d2.dataset[0]['prompt'] == '次の文を敬語にしてください。\n\n明日行く。'

def test_run_card_carries_licences():
    from colab_dpo.training import DPORecipe, run_card, run_card_markdown
    info = dict(model_id='SakanaAI/TinySwallow-1.5B-Instruct', source=None, dry_run=True)
    data = dict(report=dict(dataset=get_dataset('dpo-ja-45k').licence_info()))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        card = run_card(DPORecipe(), info=info, precision='fp32', data=data)
    codes = [x.message.code for x in w if isinstance(x.message, ColabDPOWarning)]
    assert codes == ['registry.share_alike', 'registry.non_commercial']
    assert card['licence']['data']['license'] == 'CC-BY-SA-3.0' and 'Gemma' in card['licence']['model']['license']
    md = run_card_markdown(card)
    assert 'CC-BY-SA-3.0' in md and '[registry.share_alike]' in md and '[registry.non_commercial]' in md
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        card = run_card(DPORecipe(), info=dict(model_id='Qwen/Qwen2.5-1.5B-Instruct', source=None, dry_run=True), precision='fp32',
                        data=dict(report=dict(dataset=get_dataset('hh-rlhf-ja').licence_info())))
    assert [x for x in w if isinstance(x.message, ColabDPOWarning)] == [] and card['licence']['flags'] == []

def test_training_data_path_samples_registered_dataset(tmp_path, monkeypatch):
    "`--data 短い名前` と `max_rows`: 学習のデータ読み込みが登録簿を通り、種つきで抜き取り、ライセンスをレポートに残す"
    if not FIX.is_dir(): pytest.skip('shared fixtures are absent')
    from colab_dpo.loading import load_tokenizer
    from colab_dpo.training import DPORecipe, _load_data
    e = get_dataset('hh-rlhf-ja')
    write(tmp_path/e.id, e.file_type, [dict(prompt=msgs(f'質問{i}です。'), chosen=f'丁寧な答え{i}です。', rejected=f'答え{i}') for i in range(40)])
    monkeypatch.chdir(tmp_path)
    tok = load_tokenizer(str(FIX))
    r = DPORecipe(data='hh-rlhf-ja', max_rows=10, eval_ratio=0.0, seed=3)
    ds, ev, rep, stats = _load_data(r, tok)
    assert len(ds) == 10 and rep['sampled']['rows_before'] == 40 and rep['dataset']['license'] == 'MIT'
    assert _load_data(r, tok)[0]['chosen'] == ds['chosen'] and _load_data(r.replace(seed=4), tok)[0]['chosen'] != ds['chosen']

def _exe(name):
    import shutil, sys
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)

def test_check_data_cli_short_name_and_max_rows(tmp_path):
    "`colab-dpo-check-data 短い名前 --max_rows N --json`: 登録簿を通り、抜き取り、ライセンスを出す"
    import subprocess
    exe = _exe('colab-dpo-check-data')
    if exe is None: pytest.skip('colab-dpo-check-data is not installed')
    e = get_dataset('dpo-ja-45k')
    write(tmp_path/e.id, e.file_type, [dict(prompt=f'質問{i}', chosen=f'詳しい答え{i}', rejected=f'答え{i}') for i in range(30)])
    r = subprocess.run([exe, 'dpo-ja-45k', '--max-rows', '7', '--seed', '1', '--json'], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep['rows_valid'] == 7 and rep['sampled'] == dict(max_rows=7, seed=1, rows_before=30) and rep['dataset']['share_alike'] is True
    r = subprocess.run([exe, 'dpo-ja-45k', '--max-rows', '7'], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert 'CC-BY-SA-3.0' in r.stdout and '30' in r.stdout
    r = subprocess.run([exe, 'dpo-ja-54k'], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and '[registry.unknown_dataset]' in r.stderr and 'dpo-ja-45k' in r.stderr

def test_datasets_cli():
    import subprocess
    exe = _exe('colab-dpo-datasets')
    if exe is None: pytest.skip('colab-dpo-datasets is not installed (pip install -e .)')
    r = subprocess.run([exe, '--markdown'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.count('\n| `') == len(DATASETS)
    r = subprocess.run([exe, '--name', 'hh-rlhf-ja', '--json'], capture_output=True, text=True, timeout=120)
    assert [x['id'] for x in json.loads(r.stdout)] == ['llm-jp/hh-rlhf-12k-ja']

def test_hub_path_streams_a_sample(tmp_path, monkeypatch):
    "Hub の道筋（短い名前 → _load_hub → hub_rows → load_dataset(streaming=True)）を、Hub の代わりのローカルの写しで通す"
    import datasets
    real, calls = datasets.load_dataset, []
    mirror = tmp_path/'mirror'
    e = get_dataset('synthetic-pref-ja-191k')
    write(mirror/e.id, 'jsonl', [dict(prompt=f'質問{i}', chosen=f'詳しい答え{i}', rejected=f'答え{i}') for i in range(500)])
    def local(name, **kw): calls.append((name, kw)); return real(str(mirror/name), **kw)
    monkeypatch.setattr(datasets, 'load_dataset', local)
    monkeypatch.chdir(tmp_path)   # 作業フォルダーに同名のフォルダーはない → Hub の道筋
    data = load_preferences('synthetic-pref-ja-191k', max_rows=8, seed=5)
    assert calls[0][0] == e.id and calls[0][1]['streaming'] is True and calls[0][1]['split'] == 'train'
    assert len(data.dataset) == 8 and data.report['sampled'] == dict(max_rows=8, seed=5, rows_before=None)
    assert load_preferences('synthetic-pref-ja-191k', max_rows=8, seed=5).dataset['chosen'] == data.dataset['chosen']
    assert '流し読み' in data.summary() or 'Streamed' in data.summary()
