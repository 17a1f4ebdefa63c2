#!/usr/bin/env python3
"""Makes a Llama-3.1-8B-shaped random checkpoint on the GPU host (weights drawn as in
../shared/fixtures/make-reference.py: matrices N(0, 0.08), norms 1 + N(0, 0.2), stored in bf16) and
the float32 transformers reference for one random prompt: argmax and its relative margin per
position. Usage: python3 make-llama8b-reference.py OUT_DIR [PROMPT_TOKENS=256] [STD=0.08]
STD replaces the matrices' 0.08 (the recipe's); norms keep 1 + N(0, 0.2)."""
import json, sys, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 256
std = float(sys.argv[3]) if len(sys.argv) > 3 else 0.08
t0 = time.time()
cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5, rope_theta=500000.0,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192},
                  max_position_embeddings=131072, tie_word_embeddings=False, bos_token_id=128000,
                  eos_token_id=128001, attention_bias=False, mlp_bias=False)
torch.manual_seed(1)
torch.set_default_dtype(torch.bfloat16)
with torch.device("cuda"):
    m = LlamaForCausalLM(cfg)
torch.set_default_dtype(torch.float32)
with torch.no_grad():
    for p in m.parameters():  # wider than default init so logits are not near-ties
        p.normal_(0, std if p.dim() > 1 else 0.2)
        if p.dim() == 1:
            p.add_(1.0)
m.save_pretrained(out, safe_serialization=True)
print(f"saved bf16 checkpoint in {time.time() - t0:.1f} s", flush=True)
g = torch.Generator().manual_seed(7)
ids = torch.randint(3, cfg.vocab_size, (n,), generator=g).tolist()
x = torch.tensor([ids], device="cuda")
with torch.no_grad():  # transformers itself in bf16 (sdpa), to compare with the f32 reference below
    bf = m.eval()(x).logits[0].float()
# float32 reference from the same (bf16-valued) weights; RoPE's inv_freq was computed in float32
m = m.float().eval()
with torch.no_grad():
    logits = m(x).logits[0].float()
t2 = torch.topk(logits, 2, dim=-1).values
margin = ((t2[:, 0] - t2[:, 1]) / t2[:, 0].abs()).tolist()
sel = torch.tensor(margin, device="cuda") >= 2e-2
agree = (bf.argmax(-1) == logits.argmax(-1))[sel].float().mean().item()
rel = ((bf[-1] - logits[-1]).norm() / logits[-1].norm()).item()
print(json.dumps({"std": std, "hf_bf16_vs_f32": {"counted": int(sel.sum()), "agreeShare": agree, "lastLogitsRelL2": rel}}), flush=True)


# Precision bounds: the float32 model with only some values rounded to bf16, to see which rounding
# the >= 99% bar tolerates. "kv": K (after RoPE) and V rounded, as a bf16 KV cache stores them;
# "gemm_in": the input of every linear layer rounded, as a bf16 tensor-core product reads it.
def bounds():
    import torch.nn.functional as F
    sdpa = F.scaled_dot_product_attention  # transformers' sdpa path calls it through the module attribute
    state = {"kv": False, "calls": 0}

    def attn(q, k, v, *args, **kw):
        state["calls"] += 1  # reported: 0 would mean the patch missed transformers' call
        if state["kv"]:
            k, v = k.bfloat16().float(), v.bfloat16().float()
        return sdpa(q, k, v, *args, **kw)

    F.scaled_dot_product_attention = attn
    state["gemm"] = False
    hooks = [mod.register_forward_pre_hook(lambda _m, a: (a[0].bfloat16().float(),) + a[1:] if state["gemm"] else None)
             for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    out = {}
    for name, kv, gemm in (("none", False, False), ("kv", True, False), ("gemm_in", False, True), ("kv+gemm_in", True, True)):
        state["kv"], state["gemm"] = kv, gemm
        with torch.no_grad():
            lg = m(x).logits[0].float()
        out[name] = {"agreeShare": (lg.argmax(-1) == logits.argmax(-1))[sel].float().mean().item(),
                     "lastLogitsRelL2": ((lg[-1] - logits[-1]).norm() / logits[-1].norm()).item()}
    for h in hooks:
        h.remove()
    F.scaled_dot_product_attention = sdpa
    out["sdpaCalls"] = state["calls"]
    return out


try:
    print(json.dumps({"std": std, "f32_with_bf16_rounding_of": bounds()}), flush=True)
except Exception as e:  # the bounds are a diagnostic: the reference below must still be written
    print(json.dumps({"std": std, "bounds_error": repr(e)}), flush=True)
json.dump({"std": std, "prompt_ids": ids, "argmax_per_position": logits.argmax(-1).tolist(),
           "argmax_margin_per_position": [round(v, 6) for v in margin],
           "last_logits": [round(v, 5) for v in logits[-1].tolist()],
           "transformers": __import__("transformers").__version__, "torch": torch.__version__,
           "compute": "float32 on the GPU (tf32 off), weights bf16-valued"}, open(out + "/reference.json", "w"))
print(f"reference of {n} tokens in {time.time() - t0:.1f} s", flush=True)
