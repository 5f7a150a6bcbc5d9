"""`train_dpo` は分散起動でもそのまま動く: `torchrun --nproc_per_node 2` を CPU（gloo）で走らせる。"""
import json, os, shutil, socket, subprocess, sys
from pathlib import Path
import pytest

SCRIPT = '''
import json, os, sys
import torch.distributed as dist
from colab_dpo.training import train_dpo
out, model, data = sys.argv[1:4]
res = train_dpo(models=[model], data=data, output_dir=out, quantization=None, max_steps=2, max_rows=8, eval_ratio=0.0,
                max_length=128, max_prompt_length=64, per_device_train_batch_size=1, gradient_accumulation_steps=1,
                save_steps=2, logging_steps=1, resume=None, gradient_checkpointing=False)
rank = int(os.environ['RANK'])
json.dump(dict(rank=rank, world=dist.get_world_size() if dist.is_initialized() else 1, backend=dist.get_backend() if dist.is_initialized() else None,
               step=res.metrics.get('step'), epoch=res.metrics.get('epoch')), open(os.path.join(out, f'rank{rank}.json'), 'w'))
'''

def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_torchrun_two_processes(tmp_path):
    torchrun = shutil.which('torchrun', path=str(Path(sys.executable).parent)) or shutil.which('torchrun')
    if torchrun is None: pytest.skip('torchrun がありません')
    from colab_dpo.tiny import make_tiny_model
    from colab_dpo.data import sample_path
    model = make_tiny_model(tmp_path/'tiny', arch='qwen2')
    (tmp_path/'run.py').write_text(SCRIPT)
    out = tmp_path/'out'
    env = {**os.environ, 'TQDM_DISABLE': '1', 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
           'CUDA_VISIBLE_DEVICES': ''}
    r = subprocess.run([torchrun, '--nproc_per_node', '2', '--master_addr', '127.0.0.1', '--master_port', str(_free_port()),
                        str(tmp_path/'run.py'), str(out), str(model), str(sample_path())],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ranks = [json.loads((out/f'rank{i}.json').read_text()) for i in (0, 1)]        # 両方のプロセスが最後まで走った
    assert [x['world'] for x in ranks] == [2, 2] and ranks[0]['backend'] == 'gloo'
    assert [x['step'] for x in ranks] == [2, 2]
    assert ranks[0]['epoch'] == pytest.approx(0.5)        # 2 プロセス × 1 ペア × 2 ステップ = 8 行の半分（データが分割された）
    assert len(list(out.glob('adapter/adapter_model.safetensors'))) == 1 and len(list(out.rglob('run_card.json'))) == 1
    card = json.loads((out/'run_card.json').read_text())
    assert card['world_size'] == 2
