#!/usr/bin/env python3
"""The peer for bench/gpu/engine-bench: Hugging Face transformers on the same GPU, llama-3.1-8b shape,
random bf16 weights (N(0, 0.08) matrices, 1 + N(0, 0.2) norms). Measures, in one run: rooflines with
torch (read-only sum over 8 GiB, bf16 GEMM 8192^3), prefill tok/s (eager, sdpa, batch 1), eager
decode step time with a DynamicCache at 1k context, and generate() with cache_implementation="static"
(which compiles) at batch 1. Usage: python3 peer-transformers.py [--quick] [--no-static] [--prompts L,..] [--batches B,..] [--json FILE]"""
import argparse, json, time
import torch, transformers
from transformers import LlamaConfig, LlamaForCausalLM, StoppingCriteria, StoppingCriteriaList

ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true")
ap.add_argument("--no-static", action="store_true")
ap.add_argument("--json")
ap.add_argument("--prompts", help="prefill lengths, e.g. 4096,8192 (default 512,1024,4096,8192; --quick: 4096)")
ap.add_argument("--batches", help="eager decode batches, e.g. 1,64 ('' for none; default 1,8,32,64,128; --quick: 1,64)")
args = ap.parse_args()
dev = "cuda"
res = {"device": torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
       "torch": torch.__version__, "transformers": transformers.__version__}

def sync():
    torch.cuda.synchronize()

def bench(fn, warm=1, reps=3):
    for _ in range(warm):
        fn()
    sync()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); sync(); ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]

def log(*a):
    print(*a, flush=True)

with torch.inference_mode():
    x = torch.empty(2**31, dtype=torch.float32, device=dev).normal_()
    res["readTBs"] = x.numel() * 4 / bench(lambda: x.sum(), 2, 10) / 1e12
    del x
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=dev)
    b = torch.randn_like(a)
    res["gemmTflops"] = 2 * 8192**3 / bench(lambda: a @ b, 3, 10) / 1e12
    del a, b
    log(f"roofline (torch): read {res['readTBs']:.3f} TB/s, bf16 gemm {res['gemmTflops']:.0f} TFLOP/s")

cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5, rope_theta=500000.0,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192},
                  max_position_embeddings=131072, tie_word_embeddings=False, attn_implementation="sdpa")
torch.set_default_dtype(torch.bfloat16)
with torch.device(dev):
    model = LlamaForCausalLM(cfg)
torch.set_default_dtype(torch.float32)
model.eval()
with torch.no_grad():
    for p in model.parameters():
        if p.dim() > 1:
            p.normal_(0, 0.08)
        else:
            p.normal_(1.0, 0.2)
res["attn"] = model.config._attn_implementation
log("model ready, attention:", res["attn"])
V = cfg.vocab_size

with torch.inference_mode():
    res["prefill"] = []
    def ints(text, default):
        return default if text is None else [int(v) for v in text.split(",") if v]
    for L in ints(args.prompts, [4096] if args.quick else [512, 1024, 4096, 8192]):
        ids = torch.randint(0, V, (1, L), device=dev)
        t = bench(lambda: model(ids, use_cache=False, logits_to_keep=1), 1, 3)
        res["prefill"].append({"tokens": L, "ms": t * 1e3, "tokS": L / t})
        log(f"hf prefill {L:5d}: {t*1e3:8.2f} ms  {L/t:8.0f} tok/s")
    res["decodeEager"] = []
    for B in ints(args.batches, [1, 64] if args.quick else [1, 8, 32, 64, 128]):
        ids = torch.randint(0, V, (B, 1024), device=dev)
        cache = model(ids, use_cache=True, logits_to_keep=1).past_key_values
        nxt = torch.randint(0, V, (B, 1), device=dev)
        t = bench(lambda: model(nxt, past_key_values=cache, use_cache=True, logits_to_keep=1), 2, 10)
        res["decodeEager"].append({"batch": B, "ms": t * 1e3})
        log(f"hf eager decode b={B:3d} ctx~1k: {t*1e3:8.2f} ms/step")
        del cache
        torch.cuda.empty_cache()

if not args.no_static:
    ids = torch.randint(0, V, (1, 1024), device=dev)

    class StopAt(StoppingCriteria):  # stops early without changing the static cache's length
        def __init__(self, n):
            self.n = n
        def __call__(self, input_ids, scores, **kw):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= 1024 + self.n, dtype=torch.bool,
                              device=input_ids.device)

    def gen(n):
        return model.generate(ids, max_new_tokens=80, min_new_tokens=80, do_sample=False, pad_token_id=0,
                              cache_implementation="static", stopping_criteria=StoppingCriteriaList([StopAt(n)]))
    t0 = time.perf_counter()
    with torch.inference_mode():
        gen(16); sync()
        res["staticCompileS"] = time.perf_counter() - t0
        log(f"hf static generate: first call (compile) {res['staticCompileS']:.1f} s")
        t16 = bench(lambda: gen(16), 1, 3)
        t80 = bench(lambda: gen(80), 1, 3)
    res["decodeStaticMs"] = (t80 - t16) / 64 * 1e3
    log(f"hf static-cache decode b=1 ctx~1k: {res['decodeStaticMs']:.2f} ms/step")

if args.json:
    with open(args.json, "w") as f:
        json.dump(res, f)
log(json.dumps(res))
