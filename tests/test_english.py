"英語モード（COLAB_DPO_LANG=en）: 各 CLI の出力に、利用者のデータ以外の日本語が 1 文字も無い"
import json, re
import pytest
from conftest import run_cli, assert_cli_ok, assert_cli_error, jl

JA = re.compile(r'[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]')

def japanese(r, allowed=()) -> list[str]:
    "出力のうち日本語を含む行（`allowed` に挙げた利用者のデータを含む行は除く）"
    return [l for l in (r.stdout + r.stderr).splitlines() if JA.search(l) and not any(a in l for a in allowed)]

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    from colab_dpo.tiny import make_tiny_model
    return make_tiny_model(tmp_path_factory.mktemp('tiny')/'m', 'qwen2')

def test_env():
    r = run_cli('colab-dpo-env', lang='en'); assert_cli_ok(r)
    assert japanese(r) == []

def test_check_data_sample():
    from colab_dpo.data import sample_path
    for args in ((), ('--json',)):
        r = run_cli('colab-dpo-check-data', sample_path(), *args, lang='en'); assert_cli_ok(r)
        assert japanese(r) == [], japanese(r)[:5]

def test_check_data_export(tmp_path):
    "--export: 書き出しの行も、既にある書き出し先のエラーも英語"
    from colab_dpo.data import sample_path
    args = (sample_path(), '--export', tmp_path/'pairs.jsonl', '--eval-export', tmp_path/'eval.jsonl')
    r = run_cli('colab-dpo-check-data', *args, lang='en'); assert_cli_ok(r)
    assert r.stdout.strip().splitlines()[-1].startswith('Wrote ') and japanese(r) == [], japanese(r)[:5]
    r = run_cli('colab-dpo-check-data', *args, lang='en')
    assert_cli_error(r, 'data.export_exists', 2)
    assert japanese(r) == [], japanese(r)[:5]

def test_check_data_errors(tmp_path):
    (tmp_path/'bad.jsonl').write_text('{"question": "日本の首都は？"}\n', encoding='utf-8')
    r = run_cli('colab-dpo-check-data', tmp_path/'bad.jsonl', lang='en')
    assert r.returncode == 1 and r.stderr.startswith('error [data.')
    assert japanese(r, allowed=['日本の首都は？']) == []

def test_train_dry_run(tiny, tmp_path):
    r = run_cli('colab-dpo-train', '--model', tiny, '--output-dir', tmp_path/'dry', '--dry-run', '--max-steps', 1, '--max-rows', 4,
                '--eval-ratio', 0, '--resume', 'none', lang='en', env=dict(TQDM_DISABLE=1, OMP_NUM_THREADS=1))
    assert_cli_ok(r)
    assert japanese(r) == [], japanese(r)[:5]
    md = (tmp_path/'dry'/'run_card.md').read_text(encoding='utf-8')
    assert [l for l in md.splitlines() if JA.search(l)] == []

def test_demo(tmp_path):
    "デモ（評価なし・2 ステップ）: 画面とランカードに日本語が無い"
    r = run_cli('colab-dpo-demo', '--no-eval', '--max-steps', 2, '--output-dir', tmp_path/'demo', lang='en', env=dict(TQDM_DISABLE=1, OMP_NUM_THREADS=1))
    assert_cli_ok(r)
    assert japanese(r) == [], japanese(r)[:5]
    md = (tmp_path/'demo'/'run'/'run_card.md').read_text(encoding='utf-8')
    assert [l for l in md.splitlines() if JA.search(l)] == []

def test_datasets():
    r = run_cli('colab-dpo-datasets', lang='en'); assert_cli_ok(r)
    assert japanese(r) == [], japanese(r)[:5]

@pytest.mark.parametrize('args,code', [(('colab-dpo-selftest', '--profile', 'nope'), 'train.unknown_profile'),
                                       (('colab-dpo-tune', '--trials', 0), 'tune.no_complete')])
def test_cli_errors(tmp_path, args, code):
    "自己診断と探索の CLI: コード付きのエラーが英語の 1 行で出る"
    r = run_cli(*args, '--output-dir', tmp_path/'out', lang='en', env=dict(TQDM_DISABLE=1, OMP_NUM_THREADS=1))
    assert_cli_error(r, code)
    assert japanese(r) == [], japanese(r)[:5]

def test_eval(tiny, tmp_path):
    "乱数の LoRA アダプターを持つ run フォルダを評価する（学習はしない）"
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from peft import LoraConfig, get_peft_model
    from colab_dpo.evaluation import synthetic_history
    run = tmp_path/'run'
    m = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny), LoraConfig(r=4, target_modules='all-linear', task_type='CAUSAL_LM'))
    m.save_pretrained(run/'adapter'); AutoTokenizer.from_pretrained(tiny).save_pretrained(run/'adapter')
    (run/'log_history.json').write_text(json.dumps(synthetic_history(20)))
    (run/'run_card.json').write_text(json.dumps(dict(base_model=str(tiny), recipe=dict(beta=0.1))))
    prompts = tmp_path/'p.txt'; prompts.write_text('自己紹介してください。\n', encoding='utf-8')
    r = run_cli('colab-dpo-eval', '--run-dir', run, '--prompts', prompts, '--max-new-tokens', 2, lang='en', env=dict(OMP_NUM_THREADS=1))
    assert_cli_ok(r)
    assert japanese(r, allowed=['自己紹介してください。']) == [], japanese(r)[:5]
    md = (run/'eval'/'report.md').read_text(encoding='utf-8')   # 表の行は生成文を含むので、表の外の行だけ
    assert [l for l in md.splitlines() if not l.startswith('|') and JA.search(l)] == []

CLIS = ('env', 'check-data', 'train', 'demo', 'eval', 'selftest', 'datasets', 'tune')

@pytest.mark.parametrize('cli', CLIS)
def test_help(cli):
    "--help: 英語モードでは説明も引数の help も英語（既定値の表示は残る）、日本語モードでは docments の日本語"
    en, ja = run_cli(f'colab-dpo-{cli}', '--help', lang='en'), run_cli(f'colab-dpo-{cli}', '--help', lang='ja')
    assert_cli_ok(en); assert_cli_ok(ja)
    assert japanese(en) == [], japanese(en)[:5]
    assert JA.search(ja.stdout) and en.stdout.count('(default:') == ja.stdout.count('(default:')
