#!/usr/bin/env bash
# 借りた GPU マシン（ネットワークなし）で bench/README.md の GPU の表（issue 16 の評価・OOM、issue 12 の学習率ごとのマージンの伸びと
# アダプターの足し込み、GPU での自己診断、探索の試行ごとのメモリ）を
# 1 回の実行で埋める。段階ごとに残り時間で打ち切るので、時間切れでもそれまでの結果は OUT_DIR/gpu_bench_runs.jsonl に残る。
#
#   bash bench/gpu_lent.sh OUT_DIR [FIXTURE_DIR] [DEADLINE_S]
#
# FIXTURE_DIR: TinySwallow の config.json とトークナイザーのフォルダ（既定 ../shared/fixtures/tinyswallow_tokenizer）。
# 足りないパッケージ（trl、bitsandbytes、datasets など）は、リポジトリ直下の .whl/（GPU_BENCH_WHEELS）に wheel があればそこから入れる。
# GPU_BENCH_EXTRA の引数は各段階の gpu.py に足される（CPU での配線の確認: GPU_BENCH_EXTRA='--tiny --prompts 2 --new-tokens 8 ...'）。
# colab_dpo はビルドせずにソースから使い、コンソールスクリプトは pyproject.toml の [project.scripts] から作る。
set -u
OUT=${1:?OUT_DIR}; FIX=${2:-../shared/fixtures/tinyswallow_tokenizer}; DEADLINE=${3:-520}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg PYTHONWARNINGS=ignore
WHEELS=${GPU_BENCH_WHEELS:-.whl}
if [ -d "$WHEELS" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 2
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/cdpo/bin:$PATH
python3 - <<'EOF' || exit 3
import os, sys, tomllib
os.makedirs('/tmp/cdpo/bin', exist_ok=True)
for name, ep in tomllib.load(open('pyproject.toml', 'rb'))['project']['scripts'].items():
    mod, fn = ep.split(':')
    p = f'/tmp/cdpo/bin/{name}'
    open(p, 'w').write(f'#!{sys.executable}\nimport sys\nfrom {mod} import {fn}\nsys.exit({fn}())\n'); os.chmod(p, 0o755)
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
python3 -m pip list 2>/dev/null | grep -i -E '^(torch|transformers|trl|peft|bitsandbytes|datasets|accelerate|optuna) '
echo "setup ${SECONDS}s"
phase() {  # phase CAP_S ARGS...: 残り時間と CAP_S の小さい方で gpu.py を走らせる
  local cap=$1; shift; local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 40 ]; then echo "SKIPPED $*: ${left}s left"; return; fi
  [ "$cap" -gt "$left" ] && cap=$left
  echo "=== $* (cap ${cap}s, at ${SECONDS}s)"
  timeout -k 10 "$cap" python3 bench/gpu.py --fixture "$FIX" --workdir /tmp/gpu_bench --out "$OUT" "$@" ${GPU_BENCH_EXTRA:-}
  echo "=== rc $? at ${SECONDS}s"
}
phase 240 --phases eval multi --lengths 1024 --steps 3
phase 200 --phases oom --lengths 1024 --steps 3
phase 150 --phases lr
phase 150 --phases selftest
phase 120 --phases tune
echo "total ${SECONDS}s"
