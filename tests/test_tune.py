"""colab-dpo-tune を、インストールされたコンソールスクリプトとして動かす（CPU、オフライン、ミニモデル）。
3 試行の探索を 2 試行目の途中で SIGKILL し、同じコマンドで続きから 3 試行を完了させ、best_recipe.yaml で colab-dpo-train が学習できることを確かめる。"""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, 'TQDM_DISABLE': '1', 'COLAB_DPO_LANG': 'ja', 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1',
       'TOKENIZERS_PARALLELISM': 'false', 'PYTHONWARNINGS': 'ignore', 'MPLBACKEND': 'Agg'}

def exe(cmd):
    p = shutil.which(cmd, path=str(BIN)) or shutil.which(cmd)
    assert p, f'{cmd} がインストールされていません（pip install -e .）'
    return p

def run(cmd, *args, env=None, timeout=900):
    return subprocess.run([exe(cmd), *map(str, args)], capture_output=True, text=True, env=env or ENV, timeout=timeout, cwd=ROOT)

def trials(out):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.load_study(study_name='colab-dpo', storage=f'sqlite:///{out/"study.db"}')
    return [(t.number, t.state.name, t.params, t.user_attrs.get('retry_of')) for t in st.get_trials()]

@pytest.fixture
def recipe(tmp_path):
    import yaml
    from colab_dpo.tiny import make_tiny_model
    tiny = make_tiny_model(tmp_path/'tiny', arch='qwen2')
    r = dict(models=[str(tiny)], quantization=None, max_length=128, max_prompt_length=64, max_rows=32, per_device_train_batch_size=2,
             gradient_accumulation_steps=1, eval_ratio=0.25, gradient_checkpointing=False, max_steps=2, save_steps=2, logging_steps=1,
             resume=None, output_dir=str(tmp_path/'run'))
    p = tmp_path/'recipe.yaml'; p.write_text(yaml.safe_dump(r))
    return p

def test_kill_and_resume(tmp_path, recipe):
    "2 試行目の途中で SIGKILL → 同じコマンドで再開: 完了した試行は繰り返さず、切れた試行を同じ値でやり直して 3 試行を完了する"
    out = tmp_path/'tune'
    args = ['--config', recipe, '--trials', 3, '--trial-steps', 4, '--evals', 2, '--output-dir', out]
    log = open(tmp_path/'first.log', 'w')
    p = subprocess.Popen([exe('colab-dpo-tune'), *map(str, args)], stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
    t0 = time.time()
    while not (out/'trials'/'trial-001').is_dir():   # 2 試行目（番号 1）の学習が始まった
        assert p.poll() is None, (tmp_path/'first.log').read_text()[-3000:]
        assert time.time() - t0 < 600
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGKILL); p.wait(); log.close()
    first = trials(out)
    assert [(n, s) for n,s,_,_ in first] == [(0, 'COMPLETE'), (1, 'RUNNING')], first

    r = run('colab-dpo-tune', *args, env={**ENV, 'COLAB_DPO_LANG': 'en'})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = trials(out)
    assert after[0] == first[0]                                          # 完了した試行はそのまま（やり直さない）
    assert after[1][1] == 'FAIL'                                         # 切れた試行は失敗に
    assert after[2][2] == first[1][2] and after[2][3] == 1               # 同じ値でやり直し
    assert [s for _,s,_,_ in after].count('COMPLETE') == 3 and len(after) == 4, after
    assert 'Trial 2 (2/3): complete' in r.stdout and 'Trial 3 (3/3): complete' in r.stdout, r.stdout   # 英語の 1 行の進捗

    study = json.loads((out/'study.json').read_text())
    assert [t['state'] for t in study['trials']] == ['COMPLETE', 'FAIL', 'COMPLETE', 'COMPLETE']
    done = [t for t in study['trials'] if t['state'] == 'COMPLETE']
    assert all(t['steps'] == 4 and t['wall_s'] > 0 and len(t['reports']) == 2 and t['released'] for t in done), done
    assert study['best']['value'] == max(t['value'] for t in done)
    for f in ('best_recipe.yaml', 'tune_history.png', 'tune_importance.png', 'tune_lr_beta.png'): assert (out/f).is_file(), f

    r = run('colab-dpo-train', '--config', out/'best_recipe.yaml', '--output-dir', tmp_path/'best_run')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    card = json.loads((tmp_path/'best_run'/'run_card.json').read_text())
    assert card['recipe']['learning_rate'] == study['best']['params']['learning_rate']
    assert (tmp_path/'best_run'/'adapter'/'adapter_model.safetensors').is_file()

def test_cli_errors(tmp_path, recipe):
    "使い方の誤りはコード付きの 1 行と終了コード 2（トレースバックなし）。設定の違う探索は上書きしない"
    r = run('colab-dpo-tune', '--config', tmp_path/'missing.yaml')
    assert r.returncode == 2 and 'train.config_missing' in r.stderr and 'Traceback' not in r.stderr
    r = run('colab-dpo-tune', '--config', recipe, '--pruner', 'bogus', '--output-dir', tmp_path/'t')
    assert r.returncode == 2 and 'tune.bad_choice' in r.stderr
    sp = tmp_path/'space.yaml'; sp.write_text('lerning_rate: [1.0e-5, 1.0e-3, log]\n')
    r = run('colab-dpo-tune', '--config', recipe, '--space', sp, '--output-dir', tmp_path/'t')
    assert r.returncode == 2 and 'tune.space_unknown_field' in r.stderr
