"""colab-dpo の使い方: 公開 API だけで、レシピ → データ確認 → メモリ計画 → 学習 → 評価。

    python examples/usage_example.py --dry-run   # オフライン・CPU・数十秒（同じ型のミニモデルで配線だけ確かめる）
    python examples/usage_example.py             # Colab の GPU で本物の TinySwallow-1.5B を学習する
"""
import argparse
from colab_dpo.core import in_colab
from colab_dpo.env import env_report
from colab_dpo.data import load_sample
from colab_dpo.tiny import fixture_path, make_tiny_model
from colab_dpo.training import DPORecipe, plan_memory, train_dpo

p = argparse.ArgumentParser(description='colab-dpo の使用例')
p.add_argument('--dry-run', action='store_true', help='オフラインの CPU で、ミニモデルを使って配線だけ確かめる')
p.add_argument('--output-dir', default='outputs/usage_example', help='結果のフォルダ')
p.add_argument('--max-steps', type=int, default=60, help='本番の学習ステップ数')
args = p.parse_args()

env = env_report()
print(f"GPU: {env['gpu'] or 'なし'} / 精度: {env['precision']} / TRL の API の形: {env['trl_api']}")

# 1. ハードウェアに合ったレシピ（T4 なら fp16・4bit・8bit AdamW、CPU なら fp32・量子化なしで本物を学習。配線の確認だけなら --dry-run）
model_id = 'SakanaAI/TinySwallow-1.5B-Instruct'
recipe = DPORecipe.from_profile('auto', models=[model_id], output_dir=args.output_dir, max_steps=args.max_steps)
if args.dry_run:
    # TinySwallow の本物のトークナイザー: リポジトリの fixtures → Colab なら Hub → どちらも無ければ同梱の小さなもの
    tok = fixture_path('tinyswallow_tokenizer') or (None if in_colab() else make_tiny_model(f'{args.output_dir}/tiny', arch='qwen2'))
    recipe = recipe.replace(dry_run=True, tokenizer=str(tok) if tok else None)
print(recipe)

# 2. データを確かめる（同梱の日本語サンプル。自分のデータなら load_preferences('my.jsonl', ...)）
print(load_sample(max_length=recipe.max_length))

# 3. T4（15 GB）で本物のモデルが収まるかを、学習の前に見積もる
cfg = fixture_path('tinyswallow_tokenizer', 'config.json') or model_id   # 手元に無ければ Hub の config.json だけを読む
if cfg != model_id or in_colab(): print(plan_memory(cfg, max_length=recipe.max_length, vram_gb=15.0))
else: print('本物のモデルの config.json が手元に無いので、T4 の計画は Colab で表示します（オフラインで Hub を待たない）')

# 4. 学習（OOM なら設定を下げて再開、NaN なら助言付きで停止、切断されたら同じコマンドで続きから）
res = train_dpo(recipe)
print(res)

# 5. 評価（学習前後の回答の比較、保留データでの選好の正解率、学習曲線）
from colab_dpo.evaluation import evaluate_run
print(evaluate_run(res.run_dir, n_prompts=3, max_new_tokens=48))
