"CLI の約束事: `--json | head` で BrokenPipeError にならない、/tmp に colab-dpo-* の一時フォルダを残さない"
import glob, subprocess
from conftest import cli_exe, cli_env, run_cli, assert_cli_ok

def piped(name, *args):
    "`name args | head -c 1` を動かし、(name の終了コード, name の標準エラー) を返す"
    p = subprocess.Popen([cli_exe(name), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env('en'))
    p.stdout.read(1); p.stdout.close()          # 読み手が 1 バイトで閉じる（head と同じ）
    err = p.stderr.read().decode(); return p.wait(timeout=300), err

def test_json_into_closed_pipe():
    from colab_dpo.data import sample_path
    for name, args in (('colab-dpo-env', ['--json']), ('colab-dpo-check-data', [sample_path(), '--json'])):
        rc, err = piped(name, *args)
        assert rc == 0 and 'BrokenPipeError' not in err and 'Traceback' not in err, (name, rc, err[-2000:])

def test_trainer_without_output_dir_leaves_no_temp_folder():
    "make_dpo_trainer に出力先を渡さないときの一時フォルダは、トレーナーと一緒に消える（別プロセスで確かめる）"
    code = ("import gc, tempfile; from pathlib import Path\n"
            "from colab_dpo.tiny import make_tiny_model\nfrom colab_dpo.compat import make_dpo_trainer\n"
            "d = make_tiny_model(Path(tempfile.mkdtemp())/'t', 'qwen2')\n"
            "rows = [dict(prompt='日本の首都は？', chosen='東京です。', rejected='大阪です。')] * 4\n"
            "t = make_dpo_trainer(str(d), None, rows, max_steps=1, per_device_train_batch_size=2, report_to='none')\n"
            "out = t.args.output_dir; assert Path(out).name.startswith('colab-dpo-'), out\n"
            "t.train(); del t; gc.collect(); print(out, Path(out).exists())")
    import sys
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=cli_env(TQDM_DISABLE=1), timeout=600)
    assert_cli_ok(r)
    out, exists = r.stdout.split()[-2:]
    assert exists == 'False' and not glob.glob(out)
