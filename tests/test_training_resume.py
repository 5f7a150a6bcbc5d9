"""切断からの再開: 学習中のプロセスを SIGKILL で止め、`--resume auto` で続けると、止めなかった学習と同じアダプターになる（CPU、同じシード）。"""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import cli_exe

ENV = {**os.environ, 'TQDM_DISABLE': '1', 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'PYTHONWARNINGS': 'ignore'}
ARGS = ['--max-steps', '6', '--save-steps', '1', '--max-rows', '16', '--eval-ratio', '0', '--max-length', '128', '--max-prompt-length', '64',
        '--batch-size', '2', '--grad-accum', '1', '--logging-steps', '1', '--quantization', 'none', '--learning-rate', '5e-4']

def _exe(): return cli_exe('colab-dpo-train')

@pytest.mark.skipif(os.name != 'posix', reason='SIGKILL が要る')
def test_killed_run_resumes_to_same_adapter(tmp_path):
    from colab_dpo.tiny import make_tiny_model
    from colab_dpo.data import sample_path
    from colab_dpo.training import find_checkpoints
    from safetensors.torch import load_file
    model = make_tiny_model(tmp_path/'tiny', arch='qwen2')
    base = [_exe(), '--model', str(model), '--data', str(sample_path()), *ARGS]
    full = subprocess.run([*base, '--output-dir', str(tmp_path/'full'), '--resume', 'none'], capture_output=True, text=True, env=ENV, timeout=900)
    assert full.returncode == 0, full.stderr[-3000:]

    cut = tmp_path/'cut'
    p = subprocess.Popen([*base, '--output-dir', str(cut), '--resume', 'none'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    t0 = time.time()
    while time.time() - t0 < 600 and p.poll() is None:          # 3 ステップ目のチェックポイントが書けたら、途中で強制終了する
        if any(d['complete'] and d['step'] >= 3 for d in find_checkpoints(cut/'checkpoints') if (cut/'checkpoints').is_dir()): break
        time.sleep(0.05)
    assert p.poll() is None, '強制終了する前に学習が終わってしまいました'
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (cut/'adapter').exists()
    done = [d['step'] for d in find_checkpoints(cut/'checkpoints') if d['complete']]
    assert done and max(done) < 6

    again = subprocess.run([*base, '--output-dir', str(cut), '--resume', 'auto'], capture_output=True, text=True, env=ENV, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    card = json.loads((cut/'run_card.json').read_text())
    assert card['resumed_from'] and int(card['resumed_from'].rsplit('-', 1)[1]) == max(done)
    A, B = load_file(tmp_path/'full'/'adapter'/'adapter_model.safetensors'), load_file(cut/'adapter'/'adapter_model.safetensors')
    assert A.keys() == B.keys()
    for k in A: assert (A[k] - B[k]).abs().max() < 1e-6, k
    la = [h['loss'] for h in json.loads((tmp_path/'full'/'log_history.json').read_text()) if 'loss' in h]
    lb = [h['loss'] for h in json.loads((cut/'log_history.json').read_text()) if 'loss' in h]
    assert la == pytest.approx(lb, abs=1e-6)
