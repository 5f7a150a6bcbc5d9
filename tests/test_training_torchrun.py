"""`train_dpo` は分散起動でもそのまま動く: `torchrun --nproc_per_node 2` を CPU（gloo）で走らせる。"""
import json, os, shutil, socket, subprocess, sys
from pathlib import Path
import pytest
from conftest import cli_exe

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


# ---- colab-dpo-train そのものを 2 プロセスで（torchrun と accelerate launch）。再開と、1 プロセスの同等の実行との一致 ----
ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-3   # アダプター全体の相対差 ‖a−b‖/‖a‖ の許容値。足し算の順序の違いは実測 ~4e-5、見るデータが違う学習は ~0.1。
# 要素ごとの最大差は使わない: Adam は勾配を大きさで割るので、ほぼ 0 の勾配の要素では足し算の順序の違いだけで 1 要素が学習率の桁（実測 3e-4）まで動く

def _recipe(tmp_path, name, model, **kw):
    import yaml
    from colab_dpo.data import sample_path
    r = dict(models=[str(model)], data=str(sample_path()), quantization=None, max_steps=2, max_rows=8, eval_ratio=0.0, max_length=192,
             max_prompt_length=96, per_device_train_batch_size=1, gradient_accumulation_steps=1, save_steps=2, logging_steps=1,
             gradient_checkpointing=False, lora_dropout=0.0, group_by_length=False, precompute_ref_log_probs=False, learning_rate=5e-3,
             warmup_ratio=0.0, lr_scheduler_type='constant', optim='adamw_torch', seed=0, resume='auto', report_to='none',
             output_dir=str(tmp_path/name))
    r.update(kw)
    p = tmp_path/f'{name}_{r["max_steps"]}.yaml'; p.write_text(yaml.safe_dump(r, allow_unicode=True)); return p

def _env():
    return {**os.environ, 'TQDM_DISABLE': '1', 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
            'CUDA_VISIBLE_DEVICES': ''}

def _run(cmd):
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r

def _adapter(run):
    from safetensors.torch import load_file
    return load_file(str(run/'adapter'/'adapter_model.safetensors'))

def _reldiff(a, b):
    "二つのアダプターの相対差 ‖a−b‖/‖a‖（全部の重みをまとめて）"
    assert a.keys() == b.keys()
    num = sum(float(((a[k] - b[k])**2).sum()) for k in a); den = sum(float((a[k]**2).sum()) for k in a)
    return (num / den) ** 0.5

def test_cli_two_processes_equals_single_and_resumes(tmp_path):
    "2 プロセス × マイクロバッチ 1 の colab-dpo-train は、1 プロセス × マイクロバッチ 2 と同じアダプターになる（DDP は勾配を平均する）"
    torchrun, accel, train = cli_exe('torchrun'), cli_exe('accelerate'), cli_exe('colab-dpo-train')
    if not (torchrun and accel and train): pytest.skip('torchrun / accelerate / colab-dpo-train がありません')
    from colab_dpo.tiny import make_tiny_model
    model = make_tiny_model(tmp_path/'tiny', arch='qwen2')
    two = tmp_path/'two'
    r = _run([torchrun, '--nproc_per_node', 2, '--master_addr', '127.0.0.1', '--master_port', _free_port(), '--no-python', train,
              '--config', _recipe(tmp_path, 'two', model)])
    assert r.stdout.count('ランカード:') == 1                                # 結果の表示はメインのプロセスだけ
    card = json.loads((two/'run_card.json').read_text())
    assert card['world_size'] == 2 and card['plan']['world_size'] == 2 and card['metrics']['step'] == 2
    assert card['data']['train_rows'] == 8   # 前提: 8 行すべてが検査を通る（7 行だと分散の側が 1 行を水増しして、最後のステップが 1 プロセスの実行と変わる）
    assert card['metrics']['epoch'] == pytest.approx(0.5)                   # 2 プロセス × 1 ペア × 2 ステップ = 8 行の半分
    assert [p.name for p in (two/'checkpoints').glob('checkpoint-*')] == ['checkpoint-2']
    assert len(list(two.rglob('run_card.json'))) == 1 and len(list(two.glob('adapter/adapter_model.safetensors'))) == 1
    _run([train, '--config', _recipe(tmp_path, 'one', model, per_device_train_batch_size=2)])
    _run([train, '--config', _recipe(tmp_path, 'other', model)])            # 対照: 1 プロセス × 1 ペア（見るデータが違う）
    a2 = _adapter(two)
    assert max(v.abs().max().item() for k,v in a2.items() if 'lora_B' in k) > 1e-3   # アダプターは実際に動いた
    assert _reldiff(a2, _adapter(tmp_path/'one')) < TOL
    assert _reldiff(a2, _adapter(tmp_path/'other')) > 10*TOL                # 許容値は違う学習を見分けられる大きさ
    # 再開: accelerate launch（examples/accelerate/ddp.yaml、CPU では gloo）で 4 ステップまで続ける
    _run([accel, 'launch', '--config_file', ROOT/'examples'/'accelerate'/'ddp.yaml', '--main_process_port', _free_port(), '--no_python',
          train, '--config', _recipe(tmp_path, 'two', model, max_steps=4)])
    card = json.loads((two/'run_card.json').read_text())
    assert card['resumed_from'].endswith('checkpoint-2') and card['metrics']['step'] == 4 and card['world_size'] == 2
    assert sorted(p.name for p in (two/'checkpoints').glob('checkpoint-*')) == ['checkpoint-2', 'checkpoint-4']
    _run([train, '--config', _recipe(tmp_path, 'one', model, per_device_train_batch_size=2, max_steps=4, resume=None)])
    assert _reldiff(_adapter(two), _adapter(tmp_path/'one')) < TOL          # 途中で止めて再開しても、続けて学習したのと同じ
