"""7〜8B 向けの道（ガイド `12_multi_gpu` の 4 節）を、書いてあるコマンドのまま CPU で通す:
データの検査と書き出し（colab-dpo-check-data --export）→ `accelerate launch --config_file examples/accelerate/fsdp_qlora.yaml`
で TRL 自身の DPO スクリプト（`-m trl.scripts.dpo --config examples/accelerate/trl_dpo_qlora.yaml`）を 2 プロセス → colab-dpo-eval。

CPU で変えるのは GPU にしかない部分だけ: 4bit と bf16 を切り、`use_cpu`。accelerate 1.16 は CPU では FSDP を使わず
データ並列（gloo）で走らせ、`sync_module_states`（FSDP の読み込みの同期）は CPU で使えないので切る。
つまりここで確かめるのは、設定ファイル・TRL のスクリプトとレシピ・書き出したデータ・評価への受け渡しで、重みの分割そのものではない
（それは GPU が 2 枚ある機械でだけ測れる。bench/README.md の「未測定」）。"""
import json, os, socket
from pathlib import Path
import pytest
from conftest import ROOT, run_cli, assert_cli_ok

ACC = ROOT/'examples'/'accelerate'

def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _launch(args, cwd, timeout=600, grace=30) -> dict:
    """`accelerate launch …` を動かし、終了コードと出力を返す。

    CPU（gloo）では、TRL のスクリプトが学習と保存を終えたあと、プロセスの後始末で止まることがある（このマシンで 23 回に 7 回）:
    `destroy_process_group()` を呼ばずに終わるスクリプトで、gloo の作業スレッドと DDP の Reducer の解放が GIL を取り合う
    PyTorch の既知の不具合（pytorch/pytorch#190489、py-spy で同じスタックを確認）。TRL のスクリプトは変えられないので、
    保存まで終わった（"Model saved" が出た）あと `grace` 秒たっても終わらないときだけ、'teardown_hang' として止める。
    保存の前に止まった・時間切れになったときは、そのまま失敗にする。"""
    import contextlib, subprocess, time, psutil
    from conftest import cli_env, cli_exe
    log = cwd/'launch.log'
    with open(log, 'w') as f:
        p = subprocess.Popen([cli_exe('accelerate'), *map(str, args)], stdout=f, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
                             env=cli_env(CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS=1, TQDM_DISABLE=1))
        t0, saved = time.time(), None
        while p.poll() is None and time.time() - t0 < timeout:
            time.sleep(1)
            if saved is None and 'Model saved' in log.read_text(errors='replace'): saved = time.time()
            if saved is not None and time.time() - saved > grace: break
        rc = p.poll()
        if rc is None:   # torchrun は各ランクを別のセッションで起こすので、子孫をたどって止める
            procs = [*psutil.Process(p.pid).children(recursive=True), psutil.Process(p.pid)]
            for c in procs:
                with contextlib.suppress(psutil.NoSuchProcess): c.kill()   # 調べてから止めるまでに終わったものは、それでよい
            psutil.wait_procs(procs, timeout=30); p.wait()
            rc = 'teardown_hang' if saved is not None else 'timeout'
    return dict(returncode=rc, log=log.read_text(errors='replace'))

def test_trl_script_under_accelerate_then_eval(tmp_path):
    from colab_dpo.tiny import make_tiny_model
    from colab_dpo.data import sample_path
    model = make_tiny_model(tmp_path/'tiny', arch='qwen2')
    # 1. 検査して、学習用と評価用の JSONL に書き出す（ガイドのコマンド）
    r = run_cli('colab-dpo-check-data', sample_path(), '--tokenizer', model, '--max-length', 128,
                '--export', 'pairs.jsonl', '--eval-export', 'eval.jsonl', '--eval-ratio', 0.2, cwd=tmp_path)
    assert_cli_ok(r)
    n_train, n_eval = (len((tmp_path/f).read_text(encoding='utf-8').splitlines()) for f in ('pairs.jsonl', 'eval.jsonl'))
    assert n_train > 0 and n_eval > 0
    # 2. FSDP の設定ファイルと TRL のレシピのまま、2 プロセスで数ステップ
    steps = 4
    r = _launch(['launch', '--config_file', ACC/'fsdp_qlora.yaml', '--num_processes', 2, '--main_process_port', _free_port(),
                 '--fsdp_sync_module_states', 'false', '--fsdp_cpu_ram_efficient_loading', 'false',
                 '-m', 'trl.scripts.dpo', '--config', ACC/'trl_dpo_qlora.yaml',
                 '--model_name_or_path', model, '--load_in_4bit', 'false', '--bf16', 'false', '--dtype', 'float32', '--use_cpu', 'true',
                 '--max_steps', steps, '--max_length', 128, '--logging_steps', 1, '--save_steps', steps, '--output_dir', 'out'], tmp_path)
    assert r['returncode'] in (0, 'teardown_hang'), r['log'][-3000:]
    assert r['log'].count('Model saved') == 1 and 'Traceback' not in r['log'], r['log'][-3000:]
    out = tmp_path/'out'
    assert (out/'adapter_config.json').is_file() and (out/'adapter_model.safetensors').is_file()
    state = json.loads((out/f'checkpoint-{steps}'/'trainer_state.json').read_text())
    losses = [h['loss'] for h in state['log_history'] if 'loss' in h]
    assert len(losses) == steps and state['global_step'] == steps
    # 2 プロセスでデータが分かれた: 1 ステップで見るペアは マイクロバッチ 1 × 勾配蓄積 4 × 2 プロセス
    assert state['epoch'] == pytest.approx(steps * 8 / n_train, rel=0.05)
    # 3. 評価は 1 プロセスで、学習の出力フォルダをそのまま渡す（run_card.json は無い）
    r = run_cli('colab-dpo-eval', '--run-dir', 'out', '--data', 'eval.jsonl', '--n-prompts', 2, '--max-new-tokens', 8, cwd=tmp_path,
                env=dict(CUDA_VISIBLE_DEVICES=''))
    assert_cli_ok(r)
    rep = json.loads((out/'eval'/'report.json').read_text(encoding='utf-8'))
    assert rep['preference']['n'] == n_eval
    assert rep['health']['code'] != 'eval.health_unknown'       # 学習の記録はチェックポイントの trainer_state.json から読めた
    assert len(rep['generations']['rows']) == 2
