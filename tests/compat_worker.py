#!/usr/bin/env python
"""互換マトリクスの 1 セル分: その venv の TRL / transformers で、小さな Qwen2 に LoRA を付けて `make_dpo_trainer` で DPO を回す。

`tests/compat_matrix.py` が各セルの venv の python で実行する（単独でも動く: `python tests/compat_worker.py --out r.json`）。
import するのは colab_dpo.compat と colab_dpo.tiny だけ（data/training/eval は新しいライブラリを要ることがあるため）。

ケース: plain（テキスト）、conversational（会話、rpo_alpha 付き）、implicit（暗黙のプロンプト、長さでまとめる sampler 付き）、4bit（bitsandbytes の CPU 4-bit、
transformers >= 4.53 のときだけ）、orpo・simpo・kto（`colab_dpo.methods.make_trainer`。その版の TRL に無い手法は n/a、KTO はペアでない行で）。各ケースで確かめること: 損失が記録されて下がった、rewards/accuracies が記録された、
LoRA の重みが変わり元の重みは変わらない、参照モデルのコピーが無い。
"""
from __future__ import annotations
import argparse, importlib.metadata as md, json, os, sys, tempfile, time, traceback, warnings
from pathlib import Path

PAIRS = [('日本の首都はどこですか？', '東京です。', '大阪です。'), ('富士山の高さは？', '約 3776 メートルです。', '約 100 メートルです。'),
         ('一年は何日ですか？', '365 日です。', '12 日です。'), ('水が沸騰する温度は？', '100 度です。', '50 度です。')]
U = lambda t: {'role': 'user', 'content': t}
A = lambda t: {'role': 'assistant', 'content': t}
DATA = dict(plain=[dict(prompt=p, chosen=c, rejected=r) for p, c, r in PAIRS],
            conversational=[dict(prompt=[U(p)], chosen=[A(c)], rejected=[A(r)]) for p, c, r in PAIRS],
            implicit=[dict(chosen=[U(p), A(c)], rejected=[U(p), A(r)]) for p, c, r in PAIRS])
PKGS = ('trl', 'transformers', 'peft', 'datasets', 'accelerate', 'torch', 'bitsandbytes')

def _ver(p):
    try: return md.version(p)
    except md.PackageNotFoundError: return None

def _vt(v): return tuple(int(x) for x in v.split('+')[0].split('.')[:3] if x.isdigit())

class CheckFailed(AssertionError): pass

def check(cond, reason):
    if not cond: raise CheckFailed(reason)

def run_case(case:str, tiny:Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from peft import LoraConfig
    from colab_dpo.core import ColabDPOWarning
    from colab_dpo.compat import make_dpo_trainer
    tok = AutoTokenizer.from_pretrained(tiny)
    load_kw, data, extra = {}, DATA.get(case, DATA['plain']), {}
    if case == '4bit':
        from transformers import BitsAndBytesConfig
        load_kw['quantization_config'] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_compute_dtype=torch.float32)
    if case == 'conversational': extra['rpo_alpha'] = 0.2   # 版ごとに loss_type+['sft'] / rpo_alpha / 警告 のどれかになる
    if case == 'implicit': extra['group_by_length'] = True   # 長さでまとめる sampler が、どの版のトークン化済みデータでも組めること
    model = AutoModelForCausalLM.from_pretrained(tiny, **load_kw)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'], task_type='CAUSAL_LM')
    if case == 'plain':   # bf16 の設定を一度作っても、その精度が後のトレーナーへ漏れないこと
        t16 = make_dpo_trainer(AutoModelForCausalLM.from_pretrained(tiny), tok, data, peft_config=lora, precision='bf16', max_steps=1,
                               report_to='none', save_strategy='no')
        check(t16.accelerator.mixed_precision == 'bf16', f"bf16 trainer runs under {t16.accelerator.mixed_precision}")
        check('ACCELERATE_MIXED_PRECISION' not in os.environ, 'the bf16 config leaked into os.environ')
        del t16
        os.environ['ACCELERATE_MIXED_PRECISION'] = 'bf16'   # 自前の TrainingArguments が残した値（make_dpo_trainer を通らない漏れ）
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        trainer = make_dpo_trainer(model, tok, data * 2, peft_config=lora, precision='fp32', max_steps=10, learning_rate=5e-3, lr_scheduler_type='constant',
                                   per_device_train_batch_size=8, logging_steps=1, save_strategy='no', seed=0, max_length=128,
                                   max_prompt_length=64, **extra)
    cw = [w.message for w in ws if isinstance(w.message, ColabDPOWarning)]
    check(len(cw) <= 1, f"{len(cw)} colab-dpo warnings (expected at most one)")
    if case == 'implicit':
        from colab_dpo.compat import pair_lengths
        check(trainer.colab_dpo_compat.group_by_length, f"group_by_length not applied: {[getattr(w, 'code', '') for w in cw]}")
        lens = pair_lengths(trainer.train_dataset)
        order = list(trainer._get_train_sampler())
        check(sorted(order) == list(range(len(lens))), 'the length-grouped sampler does not cover every row once')
    if case == 'plain':
        check(os.environ.pop('ACCELERATE_MIXED_PRECISION', None) == 'bf16', 'ACCELERATE_MIXED_PRECISION not restored')
        check(trainer.accelerator.mixed_precision == 'no', f"leaked mixed precision: {trainer.accelerator.mixed_precision}")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    hist = trainer.state.log_history
    losses = [h['loss'] for h in hist if 'loss' in h]
    check(len(losses) >= 5, f"only {len(losses)} losses logged")
    check(sum(losses[-3:]) < sum(losses[:3]), f"loss did not go down: {[round(x, 3) for x in losses]}")
    check(any('rewards/accuracies' in h for h in hist), 'rewards/accuracies not logged')
    after = dict(trainer.model.named_parameters())
    lora_changed = [n for n in before if 'lora_' in n and not torch.equal(before[n], after[n].detach())]
    base_changed = [n for n in before if 'lora_' not in n and not torch.equal(before[n], after[n].detach())]
    check(lora_changed, 'LoRA weights did not change')
    check(not base_changed, f"base weights changed: {base_changed[:3]}")
    check(getattr(trainer, 'ref_model', None) is None, 'a reference model copy exists')
    check(all(p.dtype == torch.float32 for p in trainer.model.parameters() if p.requires_grad), 'trainable params not fp32')
    c = trainer.colab_dpo_compat
    return dict(status='ok', losses=[round(x, 4) for x in losses], shape=c.shape, translated=c.translated,
                unsupported=c.unsupported, data=c.data, tokenizer_fixes=c.tokenizer_fixes,
                warnings=[getattr(w, 'code', '') for w in cw])

METHODS = ('orpo', 'simpo', 'kto')

def run_method(case:str, tiny:Path) -> dict:
    "DPO 以外の手法: 損失が記録され有限、LoRA だけが変わる（KTO はペアでない 👍/👎 の行で）"
    import math, torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from peft import LoraConfig
    from colab_dpo.methods import make_trainer, find_method
    from colab_dpo.core import CompatError
    try: find_method(case)
    except CompatError as e: return dict(status='n/a', reason=str(e)[:300])
    tok = AutoTokenizer.from_pretrained(tiny)
    data = ([dict(prompt=p, completion=c, label=True) for p, c, _ in PAIRS] + [dict(prompt=p, completion=r, label=False) for p, _, r in PAIRS]
            if case == 'kto' else DATA['plain'])
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'], task_type='CAUSAL_LM')
    trainer = make_trainer(AutoModelForCausalLM.from_pretrained(tiny), tok, data * 2, method=case, peft_config=lora, precision='fp32', max_steps=5,
                           learning_rate=5e-3, lr_scheduler_type='constant', per_device_train_batch_size=8, logging_steps=1, save_strategy='no',
                           seed=0, max_length=128, max_prompt_length=64)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [h['loss'] for h in trainer.state.log_history if 'loss' in h]
    check(len(losses) >= 5 and all(math.isfinite(x) for x in losses), f"losses: {losses}")
    after = dict(trainer.model.named_parameters())
    changed = [n for n in before if not torch.equal(before[n], after[n].detach())]
    check(changed and all('lora_' in n for n in changed), f"changed: {changed[:3]}")
    c = trainer.colab_dpo_compat
    keys = sorted({k for h in trainer.state.log_history for k in h if '/' in k or k in ('kl', 'nll_loss', 'log_odds_ratio', 'log_odds_chosen')})
    return dict(status='ok', losses=[round(x, 4) for x in losses], trainer=c.trainer_class, place=c.place, metrics=keys,
                translated=c.translated, unsupported=c.unsupported)

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', type=Path, required=True, help='JSON result file')
    p.add_argument('--cases', nargs='+', default=['plain', 'conversational', 'implicit', '4bit', *METHODS])
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    from colab_dpo.tiny import make_tiny_model
    from colab_dpo.compat import trl_api_shape
    vers = {k: _ver(k) for k in PKGS}
    res = dict(versions=vers, shape=trl_api_shape(), cases={})
    tiny = make_tiny_model(Path(tempfile.mkdtemp(prefix='colab-dpo-worker-'))/'tiny-qwen2', arch='qwen2')
    for case in a.cases:
        t0 = time.time()
        if case == '4bit' and (not vers['bitsandbytes'] or _vt(vers['transformers']) < (4, 53, 0)):
            r = dict(status='n/a', reason=f"transformers {vers['transformers']} < 4.53 cannot load 4-bit on CPU")
        else:
            try: r = run_method(case, tiny) if case in METHODS else run_case(case, tiny)
            except Exception as e:   # 1 ケースの失敗を記録して次のケースへ（表に理由を出すため）
                r = dict(status='fail', reason=f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}",
                         traceback=traceback.format_exc()[-3000:])
                print(r['traceback'], file=sys.stderr)
        r['seconds'] = round(time.time() - t0, 1)
        res['cases'][case] = r
        print(f"[{case}] {r['status']} {r.get('reason', '')} ({r['seconds']}s)", flush=True)
        a.out.write_text(json.dumps(res, ensure_ascii=False, indent=1))
    return 0 if all(r['status'] in ('ok', 'n/a') for r in res['cases'].values()) else 1

if __name__ == '__main__': sys.exit(main())
