# Makes a tiny random checkpoint of each model family (Qwen2, Qwen3, Mistral, Llama 3.2) in Hugging
# Face layout with transformers, and its reference outputs (greedy ids, logits) in the format of
# test/fixtures/tiny-llama-a/reference.json; modelled on /work/shared/fixtures/make-reference.py.
# Needs torch and transformers (the GPU host has them; compute is float32 on CPU).
#
#   python3 bench/models/make-family-fixtures.py --out "$OUT"
#
# writes $OUT/family-fixtures.tar holding tiny-qwen2/, tiny-qwen3/, tiny-mistral/, tiny-llama32/
# (config.json, generation_config.json, model.safetensors in bf16, reference.json); unpack it with
#   tar -xf family-fixtures.tar -C test/fixtures/
# The shapes and configs match test/native/family-checkpoints.ts (keep the two in step).
import argparse, json, os, tarfile, tempfile
import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

SHAPE = dict(vocab_size=1024, hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, hidden_act="silu")
FAMILIES = {
    "qwen2": (Qwen2Config, Qwen2ForCausalLM,
              dict(SHAPE, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
                   sliding_window=None, max_window_layers=2)),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM,
              dict(SHAPE, head_dim=32, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                   attention_bias=False, use_sliding_window=False, sliding_window=None)),
    "mistral": (MistralConfig, MistralForCausalLM,
                dict(SHAPE, head_dim=16, rms_norm_eps=1e-5, rope_theta=1000000.0, tie_word_embeddings=False,
                     sliding_window=None)),
    "llama32": (LlamaConfig, LlamaForCausalLM,
                dict(SHAPE, head_dim=16, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
                     attention_bias=False, mlp_bias=False,
                     rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 256})),
}


def make(root, family, seed, prompts, gen_len):
    conf_cls, model_cls, cfg = FAMILIES[family]
    torch.manual_seed(seed)
    m = model_cls(conf_cls(**cfg))
    with torch.no_grad():
        for name, p in m.named_parameters():  # wider than default init so logits are not near-ties
            if p.dim() > 1:
                p.normal_(0, 0.08)
            else:
                p.normal_(0, 0.2)
                if not name.endswith(".bias"):
                    p.add_(1.0)  # norm weights around 1, biases around 0
    m = m.to(torch.bfloat16)
    name = "tiny-" + family
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    m.save_pretrained(d, safe_serialization=True)
    # Reload in float32: converting the bf16 module with .float() would keep RoPE's inv_freq in bf16.
    mf = model_cls.from_pretrained(d, dtype=torch.float32).eval()
    ref = {"model": name, "transformers": transformers.__version__, "torch": torch.__version__,
           "compute": "float32 on CPU: the bf16 weights loaded with from_pretrained(dtype=float32)", "cases": []}
    for ids in prompts:
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = mf(x).logits[0]
            g = mf.generate(x, max_new_tokens=gen_len, do_sample=False, min_new_tokens=gen_len, eos_token_id=None,
                            pad_token_id=0)
        last = logits[-1]
        top = torch.topk(last, 5)
        t2 = torch.topk(logits, 2, dim=-1).values
        margin = ((t2[:, 0] - t2[:, 1]) / t2[:, 0].abs()).tolist()
        ref["cases"].append({"prompt_ids": ids, "greedy_ids": g[0, len(ids):].tolist(),
                             "last_logits_top5": {"ids": top.indices.tolist(),
                                                  "values": [round(v, 5) for v in top.values.tolist()]},
                             "argmax_per_position": logits.argmax(-1).tolist(),
                             "argmax_margin_per_position": [round(v, 6) for v in margin],
                             "last_logits": [round(v, 6) for v in last.tolist()],
                             "last_logits_l2": round(float(last.norm()), 5)})
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    files = sorted(os.listdir(d))
    size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
    assert size < 2 * 1024 * 1024, f"{name}: {size} bytes (keep each folder under 2 MB)"
    print(name, sum(p.numel() for p in m.parameters()), "params", files, size, "bytes")
    return name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="folder for family-fixtures.tar")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(7)
    prompts = [torch.randint(3, 1024, (n,), generator=g).tolist() for n in (5, 23, 100)]
    root = tempfile.mkdtemp(prefix="family-fixtures-")
    names = [make(root, fam, seed, prompts, 32) for seed, fam in enumerate(FAMILIES, start=11)]
    os.makedirs(args.out, exist_ok=True)
    tar_path = os.path.join(args.out, "family-fixtures.tar")
    with tarfile.open(tar_path, "w") as tar:
        for n in names:
            tar.add(os.path.join(root, n), arcname=n)
    print("wrote", tar_path, os.path.getsize(tar_path), "bytes")


if __name__ == "__main__":
    main()
