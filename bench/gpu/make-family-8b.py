#!/usr/bin/env python3
"""Makes one 8B-class checkpoint of a model family's real shape with random weights, on the GPU,
and transformers' references for it (bench/gpu/families-8b.sh runs it, then families-8b-check.ts).

  python3 bench/gpu/make-family-8b.py FAMILY OUT_DIR [--std 0.02] [--prompts 4] [--prompt-len 16] [--gen 32]

FAMILY: qwen2 (Qwen2.5-7B: q/k/v biases, 28 query heads over 4 KV heads = GQA 7), qwen3 (Qwen3-8B:
q/k RMSNorm), mistral (Mistral-7B-v0.3), llama32 (Llama-3.2-3B: tied embeddings, llama3 RoPE
scaling, GQA 3). Weights: matrices N(0, std), norms 1 + N(0, 0.2), biases N(0, 0.2), drawn on the
GPU in bf16 and saved as sharded safetensors (save_pretrained, 4 GB shards, as the real
checkpoints ship). std 0.02: at the fixtures' 0.08 the attention of a 4096-wide model is near
one-hot, and bf16 rounding alone flips a third of the argmaxes (bench/results/engine-gpu.md).

OUT_DIR/reference.json: random prompts (ids in [3, 32000)), transformers' float32 greedy ids (the
bf16 weights widened, RoPE's inv_freq in float32, TF32 off), the float32 argmax and its margin at
every position of prompt + greedy ids (teacher-forced), and how far bf16 alone moves transformers:
its own bf16 model (teacher-forced argmax agreement, greedy prefix equal to the float32 one) and
the float32 model with only its K/V and every linear layer's input rounded to bf16 (the rounding a
bf16 KV cache and bf16 tensor-core products impose). Also the host's read rate of the shards from
the page cache and its pinned host-to-device copy rate: the limits the loader is measured against.
"""
import argparse, copy, json, os, sys, time
import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

# The published configs' shapes (config.json of Qwen/Qwen2.5-7B, Qwen/Qwen3-8B,
# mistralai/Mistral-7B-v0.3, meta-llama/Llama-3.2-3B); sliding windows off as they ship.
FAMILIES = {
    "qwen2": ("Qwen2.5-7B", Qwen2Config, Qwen2ForCausalLM,
              dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                   num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rms_norm_eps=1e-6,
                   rope_theta=1000000.0, tie_word_embeddings=False, use_sliding_window=False, sliding_window=None,
                   max_window_layers=28, bos_token_id=151643, eos_token_id=151643)),
    "qwen3": ("Qwen3-8B", Qwen3Config, Qwen3ForCausalLM,
              dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                   num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                   rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False, attention_bias=False,
                   use_sliding_window=False, sliding_window=None, bos_token_id=151643, eos_token_id=151645)),
    "mistral": ("Mistral-7B-v0.3", MistralConfig, MistralForCausalLM,
                dict(vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
                     rms_norm_eps=1e-5, rope_theta=1000000.0, tie_word_embeddings=False, sliding_window=None,
                     bos_token_id=1, eos_token_id=2)),
    "llama32": ("Llama-3.2-3B", LlamaConfig, LlamaForCausalLM,
                dict(vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                     num_attention_heads=24, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
                     rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True, attention_bias=False,
                     mlp_bias=False, bos_token_id=128000, eos_token_id=128001,
                     rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})),
}
NEAR_TIE = 2e-2


def log(msg):
    print(f"[{FAMILY}] {msg}", file=sys.stderr, flush=True)


def margins(logits):
    t2 = torch.topk(logits, 2, dim=-1).values
    return (t2[..., 0] - t2[..., 1]) / t2[..., 0].abs()


def rounding_bound(m, x):
    """Float32 model with K/V (after RoPE) and every linear input rounded to bf16: argmax per position."""
    import torch.nn.functional as F
    sdpa = F.scaled_dot_product_attention
    calls = [0]

    def attn(q, k, v, *a, **kw):
        calls[0] += 1
        return sdpa(q, k.bfloat16().float(), v.bfloat16().float(), *a, **kw)

    F.scaled_dot_product_attention = attn
    hooks = [mod.register_forward_pre_hook(lambda _m, a: (a[0].bfloat16().float(),) + a[1:])
             for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    try:
        with torch.no_grad():
            out = m(x).logits.float().argmax(-1)
    finally:
        for h in hooks:
            h.remove()
        F.scaled_dot_product_attention = sdpa
    return out, calls[0]


def read_rate(folder):
    """GB/s of reading every shard once more on one thread (they were just written: the page cache holds them)."""
    files = [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".safetensors")]
    buf = bytearray(64 << 20)
    view = memoryview(buf)
    total, t0 = 0, time.time()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(view)
                if not n:
                    break
                total += n
    return total, total / (time.time() - t0) / 1e9


def h2d_rate():
    """GB/s of one pinned 1 GiB host-to-device copy (median of 5)."""
    h = torch.empty(1 << 30, dtype=torch.uint8, pin_memory=True)
    d = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    times = []
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.time()
        d.copy_(h, non_blocking=True)
        torch.cuda.synchronize()
        times.append(time.time() - t0)
    del h, d
    return (1 << 30) / sorted(times)[2] / 1e9


def main():
    global FAMILY
    ap = argparse.ArgumentParser()
    ap.add_argument("family", choices=sorted(FAMILIES))
    ap.add_argument("out")
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--shard", default="4GB")
    args = ap.parse_args()
    FAMILY = args.family
    shape, conf_cls, model_cls, cfg = FAMILIES[args.family]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    t0 = time.time()
    torch.manual_seed(1)
    torch.set_default_dtype(torch.bfloat16)  # parameters made in bf16; RoPE's inv_freq stays float32
    with torch.device("cuda"):
        m = model_cls(conf_cls(**cfg))
    torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() > 1:
                p.normal_(0, args.std)
            else:
                p.normal_(0, 0.2)
                if not name.endswith(".bias"):
                    p.add_(1.0)  # norm weights around 1, biases around 0
    num_params = sum(p.numel() for p in m.parameters())
    m.eval()
    if m.generation_config is not None:  # fixed-length greedy runs (generate() is also told so)
        m.generation_config.eos_token_id = None
        m.generation_config.pad_token_id = 0
    m.save_pretrained(args.out, max_shard_size=args.shard)
    shards = sorted(f for f in os.listdir(args.out) if f.endswith(".safetensors"))
    log(f"{shape}: {num_params / 1e9:.2f}B parameters, {len(shards)} shards, made and saved in {time.time() - t0:.1f} s")

    g = torch.Generator().manual_seed(7)
    prompts = torch.randint(3, min(32000, cfg["vocab_size"]), (args.prompts, args.prompt_len), generator=g)
    x = prompts.cuda()
    n, G = args.prompt_len, args.gen
    gen_kw = dict(max_new_tokens=G, min_new_tokens=G, do_sample=False, eos_token_id=None, pad_token_id=0)
    mf = copy.deepcopy(m).float()  # exact: the bf16 values widened (both fit: ~3 bytes x 3 per parameter)
    with torch.no_grad():
        bf_greedy = m.generate(x, **gen_kw)[:, n:]
        f32_greedy = mf.generate(x, **gen_kw)[:, n:]
        full = torch.cat([x, f32_greedy], dim=1)
        logits = mf(full).logits.float()  # teacher-forced along the float32 greedy ids
        bf_argmax = m(full).logits.float().argmax(-1)  # transformers' own bf16 model, same ids
    ref_argmax = logits.argmax(-1)
    ref_margin = margins(logits)
    bound_argmax, sdpa_calls = rounding_bound(mf, full)
    del m, mf, logits
    torch.cuda.empty_cache()

    gen_pos = slice(n - 1, n + G - 1)  # positions whose argmax is a greedy id
    sel = ref_margin[:, gen_pos] >= NEAR_TIE

    def share(am):
        return ((am[:, gen_pos] == ref_argmax[:, gen_pos]) & sel).sum().item() / max(1, sel.sum().item())

    def prefix(a, b):
        eq = (a == b).int().cumprod(dim=1)
        return eq.sum(dim=1).tolist()

    total_bytes, read_gbps = read_rate(args.out)
    ref = {
        "family": args.family, "shape": shape, "params": num_params, "std": args.std, "shards": len(shards),
        "bytes": total_bytes, "nearTie": NEAR_TIE,
        "prompt_ids": prompts.tolist(), "greedy_ids": f32_greedy.tolist(),
        "argmax": ref_argmax.tolist(), "margin": [[round(v, 6) for v in r] for r in ref_margin.tolist()],
        "hfBf16": {"teacherAgree": share(bf_argmax), "greedyPrefix": prefix(bf_greedy, f32_greedy)},
        "f32RoundedToBf16": {"teacherAgree": share(bound_argmax), "sdpaCalls": sdpa_calls},
        "counted": int(sel.sum().item()),
        "host": {"pageCacheReadGBps": round(read_gbps, 2), "pinnedH2dGBps": round(h2d_rate(), 2)},
        "transformers": transformers.__version__, "torch": torch.__version__,
        "compute": "float32 on the GPU (TF32 off), weights bf16-valued",
    }
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(ref, f)
    log(f"references in {time.time() - t0:.1f} s: hf bf16 agrees {ref['hfBf16']['teacherAgree']:.3f}, "
        f"bf16-rounded f32 {ref['f32RoundedToBf16']['teacherAgree']:.3f} of {ref['counted']} positions")


if __name__ == "__main__":
    main()
