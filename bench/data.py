"""選好データの検査＋統計（colab_dpo.data.load_preferences、本物の TinySwallow トークナイザー）の速さを、
同じ行を素直に `datasets.map` でトークナイズする速さと、同じ実行の中で比べる。

    python bench/data.py                 # 100k 行、3 回ずつ、中央値
    python bench/data.py --rows 20000 --repeats 5
    python bench/data.py --from-file     # JSONL ファイルから（読み込みも含めて）比べる

計るもの（どれも同じ 100k 行の日本語の選好データ。回ごとに順番を入れ替えて交互に計る）:
- ours_validate: `load_preferences(rows)`（トークナイザーなし: 形式判定・行ごとの検査・文字の統計・Dataset 作成）
- ours_full:     `load_preferences(rows, tokenizer=tok, max_length=1024)`（上に加えてトークン数の統計と長すぎるプロンプトの検査）
- baseline:      `Dataset.from_list(rows).map(tokenize prompt/chosen/rejected, batched=True)`（検査なし、トークン化だけ）
"""
import argparse, json, os, random, statistics, sys, tempfile, time, warnings
from pathlib import Path

TOPICS = ['梅雨の時期の洗濯', '新入社員の研修', 'Python の例外処理', '京都の紅葉', '確定申告', '在宅勤務の集中法', '子どもの読書習慣',
          '災害時の備蓄', '腰痛の予防', '英語の勉強法', '家計簿のつけ方', '住宅ローンの金利', '熱中症の対策', '会議の議事録', '敬語の使い方',
          '機械学習の過学習', 'SQL のインデックス', '富士山の登山', '和食の出汁', '睡眠の質', 'プレゼン資料の作り方', '引っ越しの手続き',
          '猫の健康管理', '電気代の節約', '俳句の作り方', 'Git のブランチ運用', '花粉症の対策', '営業メールの書き方', '年末の大掃除', '自転車の整備']
ASKS = ['について教えてください。', 'で気をつけることは何ですか？', 'の基本を初心者向けに説明してください。', 'のコツを三つ挙げてください。',
        'をうまく進めるにはどうすればよいですか？', 'についてよくある誤解を教えてください。', 'を短くまとめてください。']
PRE = ['', '急ぎで', '上司に説明するために', '友人に聞かれたので', '来週までに', '初めてなので', '']
GOOD = ['まず全体の流れを押さえることが大切です。', '具体的には、準備・実行・振り返りの三段階に分けて考えます。', '無理のない計画を立て、少しずつ習慣にしましょう。',
        '公的機関の最新情報も確認してください。', '迷ったときは専門家に相談するのが安全です。', '例えば、毎日十分だけ時間を取る方法があります。',
        '注意点として、体調や状況に合わせて調整してください。', '結論として、基本を丁寧に続けることが一番の近道です。', 'よくある失敗は、最初に詰め込みすぎることです。']
BAD = ['適当でいいと思います。', 'よくわかりません。', '気にしなくて大丈夫です。', 'それは自分で調べてください。', '全部やればいいです。',
       'たぶん何とかなります。', '昔からそうなので問題ありません。', '特にコツはありません。']

CONTEXT = [('家族は{n}人です。', 9), ('予算は{n}万円ほどです。', 999), ('期限まであと{n}日あります。', 365), ('経験は{n}年です。', 40),
           ('チームは{n}名です。', 300), ('毎日{n}分なら使えます。', 180), ('{n}歳の子どもがいます。', 17), ('前回の点数は{n}点でした。', 100)]

def make_rows(n:int, seed:int=0) -> list[dict]:
    "日本語の選好データの行を n 個作る（数と組み合わせで、prompt も応答もほとんど重複しない: 実データと同じくトークン化の手間を省けない）"
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        t = rnd.choice(TOPICS)
        c,hi = rnd.choice(CONTEXT)
        ctx = c.format(n=rnd.randint(1, hi))
        prompt = f'{rnd.choice(PRE)}{t}{rnd.choice(ASKS)}{ctx}'
        chosen = f'{t}についてお答えします。{ctx}' + ''.join(rnd.sample(GOOD, rnd.randint(3, 7)))
        rejected = ''.join(rnd.sample(BAD, rnd.randint(1, 3))) + f'{rnd.randint(1, 999)}回くらいやれば十分です。' + (rnd.choice(GOOD) if rnd.random() < 0.5 else '')
        rows.append(dict(prompt=prompt, chosen=chosen, rejected=rejected))
    return rows

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--rows', type=int, default=100_000)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--max-length', type=int, default=1024)
    ap.add_argument('--from-file', action='store_true', help='JSONL ファイルから読み込むところも含めて比べる')
    ap.add_argument('--tokenizer', default=None, help='既定は共有 fixtures の TinySwallow トークナイザー')
    a = ap.parse_args()
    os.environ.setdefault('HF_DATASETS_DISABLE_PROGRESS_BARS', '1')
    import datasets, transformers
    from transformers import AutoTokenizer
    from colab_dpo.data import load_preferences
    from colab_dpo.core import ColabDPOWarning
    datasets.disable_progress_bars(); datasets.disable_caching()
    warnings.simplefilter('ignore', ColabDPOWarning)
    tok_dir = a.tokenizer
    if tok_dir is None:
        from colab_dpo.tiny import fixture_path
        tok_dir = fixture_path('tinyswallow_tokenizer')
        if tok_dir is None: sys.exit('TinySwallow tokenizer fixture not found (../shared/fixtures/tinyswallow_tokenizer); pass --tokenizer')
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    rows = make_rows(a.rows)
    nchar = sum(len(r['prompt']) + len(r['chosen']) + len(r['rejected']) for r in rows)
    tmp = Path(tempfile.mkdtemp())
    path = tmp/'bench.jsonl'
    if a.from_file: path.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows), encoding='utf-8')
    src = path if a.from_file else rows

    def ours_validate(): return load_preferences(src)
    def ours_full(): return load_preferences(src, tokenizer=tok, max_length=a.max_length)
    def tok_batch(b): return {f'{k}_input_ids': tok(b[k], add_special_tokens=(k == 'prompt'))['input_ids'] for k in ('prompt', 'chosen', 'rejected')}
    def baseline():
        if a.from_file: ds = datasets.load_dataset('json', data_files=str(path), split='train', cache_dir=str(tmp/'cache'))
        else: ds = datasets.Dataset.from_list(rows)
        return ds.map(tok_batch, batched=True)

    fns = dict(ours_validate=ours_validate, ours_full=ours_full, baseline=baseline)
    times = {k:[] for k in fns}
    out = ours_full()  # 1 回目の準備（import やトークナイザーのキャッシュ）は計らない
    for i in range(a.repeats):
        for k in (list(fns) if i % 2 == 0 else list(fns)[::-1]):
            t = time.perf_counter(); fns[k](); times[k].append(time.perf_counter() - t)
    med = {k:statistics.median(v) for k,v in times.items()}
    print(f'rows={a.rows:,} chars={nchar:,} repeats={a.repeats} source={"jsonl file" if a.from_file else "list of dicts"} '
          f'cpus={os.cpu_count()} transformers={transformers.__version__} datasets={datasets.__version__}')
    uniq = {k:len({r[k] for r in rows}) / len(rows) for k in ('prompt', 'chosen', 'rejected')}
    print('distinct texts: ' + ', '.join(f'{k} {v:.1%}' for k,v in uniq.items()))
    print(f'tokenizer={tok_dir} (fast={tok.is_fast})  valid rows={out.report.rows_valid:,}  '
          f'tokens prompt/chosen/rejected mean={out.report.stats["tokens"]["prompt"]["mean"]}/{out.report.stats["tokens"]["chosen"]["mean"]}/{out.report.stats["tokens"]["rejected"]["mean"]}')
    for k,v in times.items():
        print(f'{k:14s} median {med[k]:7.2f} s  {a.rows / med[k]:>10,.0f} rows/s   (runs: {", ".join(f"{x:.2f}" for x in v)})')
    print(f'ratio ours_full / baseline (rows/s): {med["baseline"] / med["ours_full"]:.2f}x   '
          f'ours_validate / baseline: {med["baseline"] / med["ours_validate"]:.2f}x')

if __name__ == '__main__': main()
