"""colab-dpo-train / colab-dpo-demo を、インストールされたコンソールスクリプトとして端から端まで動かす（CPU、オフライン、ミニモデル）。"""
import json, subprocess, sys, time
import pytest
from conftest import ROOT, run_cli, cli_env, assert_cli_error

XENV = {'TQDM_DISABLE': '1', 'PYTHONWARNINGS': 'ignore::FutureWarning'}
ENV = cli_env('ja', **XENV)
SMALL = ['--max-steps', '2', '--max-rows', '8', '--eval-ratio', '0', '--max-length', '128', '--max-prompt-length', '64',
         '--batch-size', '2', '--grad-accum', '1', '--save-steps', '2', '--logging-steps', '1', '--resume', 'none']

def run(cmd, *args, timeout=900): return run_cli(cmd, *args, lang='ja', env=XENV, timeout=timeout)

@pytest.fixture(scope='session')
def tiny(tmp_path_factory):
    from colab_dpo.tiny import make_tiny_model, TINY_ARCHS
    root = tmp_path_factory.mktemp('tiny')
    return {a: make_tiny_model(root/a, arch=a) for a in TINY_ARCHS}

@pytest.fixture(scope='session')
def sample():
    from colab_dpo.data import sample_path
    return sample_path('standard')

def test_help_is_fast_and_light():
    "--help は重いライブラリを読み込まない（import だけで torch が入らない）"
    r = subprocess.run([sys.executable, '-c', "import sys, colab_dpo.training; print(sorted(m for m in ('torch','transformers','trl') if m in sys.modules))"],
                       capture_output=True, text=True, env=ENV)
    assert r.stdout.strip() == '[]', r.stdout + r.stderr
    r = run('colab-dpo-train', '--help')
    assert r.returncode == 0 and '--dry-run' in r.stdout and '--resume' in r.stdout

@pytest.mark.parametrize('arch', ['qwen2', 'llama', 'gemma2', 'gpt_neox'])
def test_train_cli_4bit(tmp_path, tiny, sample, arch):
    "4 つの型のミニモデルを 4bit（bitsandbytes の CPU 実装）で 2 ステップ学習し、出力一式を確かめる"
    t = time.time()
    r = run('colab-dpo-train', '--model', tiny[arch], '--data', sample, '--output-dir', tmp_path/'out', '--quantization', '4bit', *SMALL)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path/'out'
    for f in ('adapter/adapter_model.safetensors', 'adapter/adapter_config.json', 'adapter/tokenizer_config.json',
              'run_card.json', 'run_card.md', 'log_history.json', 'recipe.yaml'): assert (out/f).is_file(), f
    card = json.loads((out/'run_card.json').read_text())
    assert card['recipe']['quantization'] == '4bit' and card['model']['load_report']['quantization'] == '4bit'
    assert card['precision'] == 'fp32' and card['base_model'] == str(tiny[arch])
    hist = json.loads((out/'log_history.json').read_text())
    assert [h['step'] for h in hist if 'loss' in h] == [1, 2]
    assert all('rewards/accuracies' in h and 'mem/rss_gb' in h for h in hist if 'loss' in h)
    from safetensors.torch import load_file
    w = load_file(out/'adapter/adapter_model.safetensors')
    assert any(k.endswith('lora_B.weight') and w[k].abs().sum() > 0 for k in w), 'LoRA B が初期値（0）のまま'
    assert 'ランカード' in r.stdout and '## 最終指標' in (out/'run_card.md').read_text()
    print(f'{arch}: {time.time()-t:.1f} s')

def test_exit_codes(tmp_path, tiny, sample):
    "使い方の誤りは 2、学習の失敗は 1。どちらもトレースバックなしの日本語"
    bad = tmp_path/'bad.yaml'; bad.write_text('lerning_rate: 1e-5\n')
    for args in (['--beta', '-1'], ['--config', bad], ['--config', tmp_path/'none.yaml'], ['--quantization', '3bit']):
        r = run('colab-dpo-train', '--model', tiny['qwen2'], *args)
        assert_cli_error(r, 'train.', 2)
        assert r.stderr.startswith('エラー [train.'), r.stderr
    assert run('colab-dpo-train', '--no-such-flag').returncode == 2
    empty = tmp_path/'empty.jsonl'; empty.write_text('{"prompt": "こんにちは"}\n')
    r = run('colab-dpo-train', '--model', tiny['qwen2'], '--data', empty, '--output-dir', tmp_path/'o1', *SMALL)
    assert_cli_error(r, 'エラー [data.', 1)
    r = run('colab-dpo-train', '--model', tmp_path/'no_such_model', '--data', sample, '--output-dir', tmp_path/'o2', *SMALL)
    assert_cli_error(r, 'エラー [load.', 1)

def test_dry_run_with_example_recipe(tmp_path):
    "examples/t4_recipe.yaml をドライランで: TinySwallow の本物のトークナイザーでミニモデルを作り、T4 の計画を出す"
    from colab_dpo.tiny import fixture_path
    tok = fixture_path('tinyswallow_tokenizer')
    if tok is None: pytest.skip('shared/fixtures/tinyswallow_tokenizer がありません')
    r = run('colab-dpo-train', '--config', ROOT/'examples/t4_recipe.yaml', '--dry-run', '--tokenizer', tok, '--output-dir', tmp_path/'dry')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    card = json.loads((tmp_path/'dry'/'run_card.json').read_text())
    assert card['model']['dry_run'] and card['model']['arch'] == 'qwen2' and card['recipe']['max_steps'] == 2
    assert card['plan']['budget_gb'] == pytest.approx(13.5) and card['plan']['fits'] is True
    assert 'メモリ計画' in r.stdout and 'ドライラン' in (tmp_path/'dry'/'run_card.md').read_text()

def test_demo_command(tmp_path):
    "colab-dpo-demo: ミニモデルと同梱サンプルで学習から評価まで。出力の場所を表示する"
    t = time.time()
    r = run('colab-dpo-demo', '--output-dir', tmp_path/'demo')
    dt = time.time() - t
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run_dir = tmp_path/'demo'/'run'
    for f in ('adapter/adapter_model.safetensors', 'run_card.json', 'run_card.md', 'log_history.json'): assert (run_dir/f).is_file(), f
    assert str(run_dir/'adapter') in r.stdout and 'デモが終わりました' in r.stdout
    hist = json.loads((run_dir/'log_history.json').read_text())
    losses = [h['loss'] for h in hist if 'loss' in h]
    assert losses[-1] < losses[0], losses                 # 学習が進んでいる
    if (run_dir/'eval').is_dir(): assert any((run_dir/'eval').iterdir())
    print(f'demo: {dt:.0f} s')

def test_console_keeps_bars_and_logs_the_rest(tmp_path, tiny, sample):
    "画面には進捗バーと colab-dpo の文だけ: ログの dict とライブラリの警告（FutureWarning）は train.log に行く（警告を消さない設定でも）"
    r = run_cli('colab-dpo-train', '--model', tiny['qwen2'], '--data', sample, '--output-dir', tmp_path/'out', *SMALL,
                lang='en', env={'PYTHONWARNINGS': '', 'TQDM_DISABLE': '0'})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "{'loss'" not in r.stdout + r.stderr and 'FutureWarning' not in r.stderr
    lines = (tmp_path/'out'/'train.log').read_text(encoding='utf-8').splitlines()
    logs = [json.loads(l) for l in lines if l.startswith('{')]
    assert [x['step'] for x in logs if 'loss' in x] == [1, 2] and all('rewards/margins' in x for x in logs if 'loss' in x)
    n = sum(1 for l in lines if not l.startswith('{'))   # ライブラリの警告の行
    assert (f'{n} library warnings were written' in r.stdout) == (n > 0)

def test_eval_data_file(tmp_path, tiny, sample):
    "--eval-data: 評価はそのファイルで（学習には data を全部使う）。prompt の重なりは警告、列の違いはコード付きで止まり、変えて再開すると別の学習として止まる"
    from conftest import jl
    rows = [json.loads(l) for l in sample.read_text(encoding='utf-8').splitlines()]
    train, held = tmp_path/'train.jsonl', tmp_path/'held.jsonl'
    train.write_text(jl(rows[:8]), encoding='utf-8'); held.write_text(jl(rows[150:155]), encoding='utf-8')
    base = ['--model', tiny['qwen2'], '--data', train, *SMALL]
    r = run('colab-dpo-train', *base, '--eval-data', held, '--output-dir', tmp_path/'a')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    card = json.loads((tmp_path/'a'/'run_card.json').read_text())
    assert card['data']['train_rows'] == 8 and card['recipe']['eval_data'] == str(held)          # eval_ratio で削られない
    assert len((tmp_path/'a'/'eval_data.jsonl').read_text(encoding='utf-8').splitlines()) == 5    # 評価モジュールが使う保留データ
    assert 'train.eval_overlap' not in r.stderr
    assert any('eval_loss' in h for h in json.loads((tmp_path/'a'/'log_history.json').read_text()))
    r = run('colab-dpo-train', *base, '--eval-data', train, '--output-dir', tmp_path/'b')       # 学習と同じ行で評価
    assert r.returncode == 0 and 'train.eval_overlap' in r.stderr, r.stderr[-3000:]
    kto = tmp_path/'kto.jsonl'; kto.write_text(jl([dict(prompt=x['prompt'], completion=x['chosen'], label=True) for x in rows[150:154]]), encoding='utf-8')
    assert_cli_error(run('colab-dpo-train', *base, '--eval-data', kto, '--output-dir', tmp_path/'c'), 'train.eval_data_columns')
    from colab_dpo.checkpoints import run_fingerprint, fingerprint_diff
    from colab_dpo.recipe import DPORecipe
    fa, fb = (run_fingerprint(DPORecipe(data=str(train), eval_data=str(p))) for p in (held, kto))
    assert {d.split(':')[0] for d in fingerprint_diff(fa, fb)} == {'eval_data', 'eval_data_digest'}
    assert 'eval_data_digest' not in run_fingerprint(DPORecipe(data=str(train)))                 # 前からある実行の指紋は変わらない
