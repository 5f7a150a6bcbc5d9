"`colab-dpo-eval` を別プロセスで動かし、起動の軽さ・終了コード・レポートのファイルを確かめる"
import json, subprocess, sys, time
import pytest
from conftest import run_cli, cli_exe, no_traceback, assert_cli_error, jl

EXE = cli_exe('colab-dpo-eval')
pytestmark = pytest.mark.skipif(EXE is None, reason='colab-dpo-eval is not installed (pip install -e .)')

PAIRS = [('日本の首都はどこですか？', '日本の首都は東京です。', 'よくわかりません。'),
         ('富士山の高さを教えてください。', '富士山の高さは 3776 メートルです。', 'とても高い山です。'),
         ('一日は何時間ですか？', '24 時間です。', '長いです。')]

def conv(p, c, r): return dict(prompt=[dict(role='user', content=p)], chosen=[dict(role='assistant', content=c)],
                               rejected=[dict(role='assistant', content=r)])

def run(*args, lang=None): return run_cli('colab-dpo-eval', *args, lang=lang, env=dict(OMP_NUM_THREADS=1), timeout=600)  # 小さなモデルは 1 スレッドが速い

def test_help_is_fast_and_light():
    best = min(_timed_help() for _ in range(3))
    assert best < 1.0, f'--help took {best:.2f} s'
    code = ("import sys, colab_dpo.evaluation; "
            "print([m for m in ('torch','transformers','trl','peft','datasets','pandas','matplotlib','numpy') if m in sys.modules])")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60).stdout.strip()
    assert out == '[]', f'heavy modules imported at module level: {out}'

def _timed_help():
    t = time.perf_counter(); r = run('--help'); dt = time.perf_counter() - t
    assert r.returncode == 0 and '--run-dir' in r.stdout and '--max-new-tokens' in r.stdout and '--prompts' in r.stdout
    return dt

def test_missing_run_dir_exit_2():
    r = run()
    assert_cli_error(r, 'eval.missing_run_dir', 2)
    assert '--run-dir' in r.stderr

def test_not_a_run_dir_exit_1(tmp_path):
    r = run('--run-dir', tmp_path)
    assert_cli_error(r, 'eval.no_run', 1)
    assert 'adapter' in r.stderr
    r = run('--run-dir', tmp_path/'nothing', lang='en')
    assert r.returncode == 1 and 'eval.no_run' in r.stderr and 'run folder' in r.stderr

@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    "小さなモデル＋乱数で初期化した LoRA アダプター＋過学習の症状を持つ記録で、学習モジュールと同じ形の run フォルダを作る"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from peft import LoraConfig, get_peft_model
    from colab_dpo.tiny import make_tiny_model
    from colab_dpo.evaluation import synthetic_history
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp('eval')
    base = make_tiny_model(d/'base', 'qwen2')
    tok = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    m = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                       LoraConfig(r=4, lora_alpha=32, target_modules='all-linear', init_lora_weights=False, task_type='CAUSAL_LM'))
    run = d/'run'
    m.save_pretrained(run/'adapter'); tok.save_pretrained(run/'adapter')
    (run/'log_history.json').write_text(json.dumps(synthetic_history(40, faults=['overfit']), indent=1))
    (run/'eval_data.jsonl').write_text(jl([conv(*p) for p in PAIRS]), encoding='utf-8')
    card = dict(base_model=str(base), model=dict(model_id='tiny', source=str(base)), eval_data='eval_data.jsonl',
                recipe=dict(beta=0.1, quantization='4bit', max_length=256))
    (run/'run_card.json').write_text(json.dumps(card, ensure_ascii=False), encoding='utf-8')
    (d/'prompts.txt').write_text('自己紹介してください。\n好きな季節は？\n', encoding='utf-8')
    (d/'other.jsonl').write_text(jl([conv(*p) for p in PAIRS[:2]]), encoding='utf-8')
    return run

def test_end_to_end_report(run_dir):
    r = run('--run-dir', run_dir, '--prompts', run_dir.parent/'prompts.txt', '--max-new-tokens', 4)
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    assert '効果:' in r.stdout and '健全性:' in r.stdout and 'report.md' in r.stdout
    for s in ('[評価] Python の起動', '[評価] 学習の記録 40 行', '[評価] 読み込み', 'fp32', '[評価] 保留データ 3 組', '[評価] 学習後の生成はアダプターを重みに足し込みました',
              '[評価] 2 問の回答', '[評価] 判定・図・レポート', '[評価] 合計'): assert s in r.stdout, (s, r.stdout)  # 段階と所要時間（時間の行で全体を覆う）
    assert '採点（学習前）' in r.stderr and '生成（学習後）' in r.stderr, r.stderr[-2000:]                                # 進捗バー（tqdm）
    ev = run_dir/'eval'
    assert sorted(p.name for p in ev.iterdir()) == ['preference.png', 'report.json', 'report.md', 'training_dashboard.png']
    for p in ('preference.png', 'training_dashboard.png'): assert (ev/p).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    j = json.loads((ev/'report.json').read_text(encoding='utf-8'))
    assert j['base_model'] == str(run_dir.parent/'base') and j['beta'] == 0.1
    assert j['preference']['summary']['n'] == 3                        # run_card の eval_data
    assert [x['prompt'] for x in j['generations']['rows']] == ['自己紹介してください。', '好きな季節は？']
    assert all(x[w]['tokens'] <= 4 for x in j['generations']['rows'] for w in ('before', 'after'))
    assert j['health']['code'] == 'eval.health_issues' and 'eval.overfitting' in [n['code'] for n in j['notes']]
    assert j['verdict']['code'].startswith('eval.verdict_')
    assert j['load']['code'] == 'eval.load_cpu' and j['load']['quantization'] is None   # CPU では量子化せず fp32（GPU の選び方は 04_eval のテスト）
    mg = j['generations']['summary']['merge']                                            # fp32 なので学習後の生成はアダプターを足し込む
    assert mg['merged'] is True and mg['code'] == 'eval.merge_ok' and mg['error'] < 1e-5
    md = (ev/'report.md').read_text(encoding='utf-8')
    for s in ('# DPO 評価レポート', '## 結論', '](training_dashboard.png)', '](preference.png)', '自己紹介してください。'): assert s in md

def test_data_and_out_dir_override(run_dir, tmp_path):
    r = run('--run-dir', run_dir, '--data', run_dir.parent/'other.jsonl', '--prompts', 'ja', '--n-prompts', 1,
            '--max-new-tokens', 2, '--out-dir', tmp_path/'rep')
    assert r.returncode == 0, r.stderr
    j = json.loads((tmp_path/'rep'/'report.json').read_text(encoding='utf-8'))
    assert j['preference']['summary']['n'] == 2 and len(j['generations']['rows']) == 1

def test_checkpoint_uses_its_run_card(run_dir, tmp_path):
    "途中のチェックポイント（RUN/checkpoints/checkpoint-N）: run フォルダの run_card の保留データと基盤モデルで評価し、レポートはチェックポイントの中"
    import shutil
    from colab_dpo.evaluation import synthetic_history
    rd = shutil.copytree(run_dir, tmp_path/'run', ignore=shutil.ignore_patterns('eval'))
    ck = rd/'checkpoints'/'checkpoint-20'
    shutil.copytree(rd/'adapter', ck)
    (ck/'trainer_state.json').write_text(json.dumps(dict(global_step=20, log_history=synthetic_history(20))))
    r = run('--run-dir', ck, '--n-prompts', 1, '--max-new-tokens', 4)
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    j = json.loads((ck/'eval'/'report.json').read_text(encoding='utf-8'))
    assert j['preference']['n'] == len(PAIRS)                 # run_card の eval_data（run フォルダからの相対パス）
    assert '[評価] 学習の記録 20 行' in r.stdout              # 記録はチェックポイントの trainer_state.json（その時点まで）
    assert not (rd/'eval').exists()
