"""学習後の生成: LoRA を分けたまま（基準） 対 `merged_adapter` で重みに足し込んで、の速さと、16bit で足し込んだときの誤差。

呼び出しの手間で時間が決まる形（1.5B と同じ 28 層、幅だけ 64）の Qwen2 に全線形層の LoRA（r 16、B も乱数）を付け、
12 問 × 32 新トークンを貪欲法で生成する。基準と足し込みを交互に --repeat 回ずつ測り、中央値の比を出す（同じ実行の中の比）。
足し込んだ間の回答が分けたままの回答と同じか、抜けたあとの重みが元と 1 ビットも違わないかも確かめる。
続けて、同じ LoRA の大きさを変えながら、bf16・fp16 の重みに足し込んだときの差分の相対誤差を測る（上限 5% を超えると足し込まない）。

    python bench/eval_merge.py [--repeat 3] [--device cpu|cuda] [--json OUT.json]
"""
import argparse, json, statistics, sys, time
from pathlib import Path

def build(device, dtype):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config
    from peft import LoraConfig, get_peft_model
    from colab_dpo.tiny import tiny_tokenizer
    tok = tiny_tokenizer('qwen2')
    cfg = Qwen2Config(vocab_size=-(-len(tok)//64)*64, hidden_size=64, intermediate_size=256, num_hidden_layers=28, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(cfg).to(device=device, dtype=dtype)
    lc = LoraConfig(r=16, lora_alpha=32, target_modules='all-linear', init_lora_weights=False, task_type='CAUSAL_LM')
    return get_peft_model(base, lc).eval(), tok

def gen_speed(model, tok, repeat, new=32):
    import torch
    from colab_dpo.evaluation import generate_answers, prompt_ids, JA_PROMPTS, merged_adapter
    ids = [prompt_ids(tok, p) for p in JA_PROMPTS]
    model.generation_config.eos_token_id = None   # 全員が new トークンまで生成する（止まる位置で比が揺れないように）
    def run():
        t = time.perf_counter(); out = generate_answers(model, tok, ids, new, batch_size=len(ids))
        if torch.cuda.is_available(): torch.cuda.synchronize()
        return time.perf_counter() - t, out
    w0 = {k: v.clone() for k,v in model.state_dict().items()}
    run()   # 温め
    sep, mer, info = [], [], None
    for _ in range(repeat):
        s, a = run(); sep.append(s)
        with merged_adapter(model) as info: m, b = run()
        mer.append(m)
    same = sum(x == y for x,y in zip(a, b))/len(a)
    intact = all(torch.equal(v, model.state_dict()[k]) for k,v in w0.items())
    toks = len(ids)*new
    return dict(prompts=len(ids), new_tokens=new, separate_s=statistics.median(sep), merged_s=statistics.median(mer),
                separate_tok_s=toks/statistics.median(sep), merged_tok_s=toks/statistics.median(mer),
                ratio=statistics.median(sep)/statistics.median(mer), same_answers=same, weights_restored_exactly=intact,
                merge_code=info['code'], merge_error=info['error'])

def merge_errors(device):
    "LoRA の B を縮めて差分の大きさ（|ΔW|/|W|）を変え、bf16・fp16 に足し込んだときの相対誤差と、足し込むかどうか"
    import torch
    from colab_dpo.scoring import merged_adapter, _lora_layers
    rows = []
    for dtype in (torch.bfloat16, torch.float16):
        for scale in (0.1, 0.01, 0.001, 0.0001):
            model, _ = build(device, dtype)
            for m in _lora_layers(model): m.lora_B['default'].weight.data *= scale
            with merged_adapter(model) as info: pass
            rows.append(dict(dtype=str(dtype).split('.')[-1], delta_over_w=info['delta_over_w'], error=info['error'], merged=info['merged'], code=info['code']))
    return rows

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--repeat', type=int, default=3); ap.add_argument('--device', default='cpu'); ap.add_argument('--json')
    a = ap.parse_args()
    import torch
    if a.device == 'cpu': torch.set_num_threads(1)
    model, tok = build(a.device, torch.float32 if a.device == 'cpu' else torch.float16)
    sp = gen_speed(model, tok, a.repeat)
    print(f"生成 {sp['prompts']} 問 × {sp['new_tokens']} トークン（{a.device}）: 分けたまま {sp['separate_tok_s']:.0f} トークン/秒、"
          f"足し込み {sp['merged_tok_s']:.0f} トークン/秒 → 比 ×{sp['ratio']:.2f}（基準 = 分けたまま）")
    print(f"  回答が同じ: {sp['same_answers']:.0%}、重みを完全に戻した: {sp['weights_restored_exactly']}、{sp['merge_code']}（誤差 {sp['merge_error']:.2e}）")
    er = merge_errors(a.device)
    for r in er:
        print(f"  {r['dtype']:>8} |ΔW|/|W| {r['delta_over_w']:.4f}: 足し込んだ差分の相対誤差 {r['error']:.2%} → {'足し込む' if r['merged'] else '分けたまま'}")
    if a.json: Path(a.json).write_text(json.dumps(dict(device=a.device, torch=torch.__version__, speed=sp, merge_errors=er), indent=1))

if __name__ == '__main__': main()
