"""colab-dpo-selftest を、インストールされたコンソールスクリプトとして端から端まで動かす（CPU、オフライン、事前学習したミニモデル）。
README のテストコマンド（pytest tests）に含まれるので、CI の中で「学習が本当に効く」ことを毎回確かめる。"""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEYS = ('n', 'logp_accuracy_before', 'logp_accuracy_after', 'reward_accuracy', 'reward_accuracy_ci', 'margin_mean', 'change_p_value')

@pytest.fixture(scope='module')
def env(tmp_path_factory):
    "ミニモデルのキャッシュはこのモジュールの中で共有する（2 つ目のテストは事前学習を読み直すだけ）"
    cache = os.environ.get('COLAB_DPO_CACHE') or str(tmp_path_factory.mktemp('cache'))
    return {**os.environ, 'COLAB_DPO_CACHE': cache, 'TQDM_DISABLE': '1', 'COLAB_DPO_LANG': 'ja', 'HF_HUB_OFFLINE': '1',
            'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'PYTHONWARNINGS': 'ignore'}

def run(env, *args, timeout=900):
    exe = shutil.which('colab-dpo-selftest', path=str(BIN)) or shutil.which('colab-dpo-selftest')
    assert exe, 'colab-dpo-selftest がインストールされていません（pip install -e .）'
    r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    return r, (json.loads(r.stdout) if r.stdout.strip() else None)   # --json の標準出力は JSON だけ（進み具合は標準エラー）

def test_selftest_cpu_passes(env, tmp_path):
    "製品の cpu レシピで学習すると、学習に使っていない項目で chosen（丁寧体）の方へ有意に動く: 終了コード 0 と固定のキー"
    r, j = run(env, '--profile', 'cpu', '--json', '--output-dir', tmp_path/'st')
    assert j is not None, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.returncode == 0, json.dumps({k: j[k] for k in ('preference', 'style', 'verdict')}, ensure_ascii=False)
    assert j['passed'] is True and j['verdict']['code'] == 'eval.verdict_helped'
    for k in KEYS: assert k in j['preference'], k
    p = j['preference']
    assert p['reward_accuracy_ci'][0] > 0.5 and p['change_p_value'] < 0.05 and p['logp_accuracy_after'] > p['logp_accuracy_before']
    assert j['style']['after'] > j['style']['before']
    rep = json.loads((tmp_path/'st'/'run'/'eval'/'report.json').read_text(encoding='utf-8'))
    for k in KEYS: assert k in rep['preference'], k
    assert rep['verdict']['code'] == j['verdict']['code'] and rep['preference']['n'] == p['n']
    assert rep['health']['code'] == 'eval.health_ok', rep['notes']   # 実測で選んだレシピ（NLL 項あり）では chosen の尤度が崩れない

def test_swapped_pairs_are_not_helped(env, tmp_path):
    "壊れた学習（chosen と rejected を入れ替え）は、逆効果か効果なしと判定され、終了コード 1"
    r, j = run(env, '--profile', 'cpu', '--json', '--swap', '--output-dir', tmp_path/'bad')
    assert j is not None, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.returncode == 1 and j['passed'] is False
    assert j['verdict']['code'] in ('eval.verdict_harmed', 'eval.verdict_no_effect'), j['verdict']
    assert j['preference']['logp_accuracy_after'] < j['preference']['logp_accuracy_before']

def test_refuses_non_empty_output(env, tmp_path):
    "既存の結果を消さない: 空でない出力先は、コード付きの使い方のエラー（終了コード 2）で止まる"
    (tmp_path/'old').mkdir(); (tmp_path/'old'/'keep.txt').write_text('x')
    r, _ = run(env, '--output-dir', tmp_path/'old')
    assert r.returncode == 2 and (tmp_path/'old'/'keep.txt').read_text() == 'x'
    assert 'selftest.output_exists' in r.stderr and 'Traceback' not in r.stderr
