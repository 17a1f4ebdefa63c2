"""Builds models/kjv-chat from the King James Bible text in one command: trains the byte-level BPE
tokenizer, builds the document stream (corpus.py), trains a small Llama for a time budget, writes
the Hugging Face folder and packs it as OUT/<name>.tar. See models/kjv-chat/README.md.

  sh models/train/extract-kjv.sh .gpu/corpus          # once, where Debian's bible-kjv is installed
  python3 models/train/train.py --corpus .gpu/corpus/kjv-bible.txt --minutes 4 --out "$OUT"

Checks on the way (each one that its library allows; the report says which ran):
- before training: the `tokenizers` library encodes sample documents to the ids used in training;
- after writing: `transformers` loads the folder, its logits equal this model's (bf16 weights),
  and its chat template renders as corpus.render_chat does.
A failed check after training still leaves the tar in OUT, and the command exits 1.
"""
import argparse
import json
import math
import os
import sys
import tarfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import corpus  # noqa: E402
import export  # noqa: E402
from model import Llama  # noqa: E402

SAMPLE_PROMPTS = [
    'What does the Bible say about love?', 'Tell me about light.', 'John 3:16', 'Recite Genesis 1:1.',
    'Finish this verse: The LORD is my shepherd', 'Hello', 'Who are you?', 'Give me a verse about wisdom.',
]


def args_of(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--corpus', required=True, help='kjv-bible.txt from extract-kjv.sh')
    p.add_argument('--out', default=os.environ.get('OUT', 'out'), help='where <name>.tar goes [$OUT or ./out]')
    p.add_argument('--name', default='kjv-chat')
    p.add_argument('--minutes', type=float, default=4.0, help='training time budget (tokenizer and data excluded)')
    p.add_argument('--max-steps', type=int, default=0, help='stop after this many steps too (0: time only)')
    p.add_argument('--vocab', type=int, default=4096)
    p.add_argument('--hidden', type=int, default=384)
    p.add_argument('--layers', type=int, default=6)
    p.add_argument('--heads', type=int, default=6)
    p.add_argument('--kv-heads', type=int, default=2)
    p.add_argument('--ffn', type=int, default=1024)
    p.add_argument('--seq', type=int, default=1024, help='training window = max_position_embeddings')
    p.add_argument('--max-positions', type=int, default=0, help='max_position_embeddings [0: --seq]')
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--warmup', type=int, default=200, help='linear warm-up steps; then cosine decay to lr/10 over the time budget')
    p.add_argument('--stream-tokens', type=int, default=64_000_000, help='tokens of sampled documents to draw windows from')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--save-dtype', choices=['bf16', 'f32'], default='bf16')
    return p.parse_args(argv)


def model_config(a, vocab):
    return {
        'architectures': ['LlamaForCausalLM'], 'model_type': 'llama',
        'vocab_size': a.vocab, 'hidden_size': a.hidden, 'intermediate_size': a.ffn,
        'num_hidden_layers': a.layers, 'num_attention_heads': a.heads, 'num_key_value_heads': a.kv_heads,
        'head_dim': a.hidden // a.heads, 'hidden_act': 'silu', 'max_position_embeddings': a.max_positions or a.seq,
        'rms_norm_eps': 1e-5, 'rope_theta': 10000.0, 'rope_scaling': None, 'tie_word_embeddings': True,
        'attention_bias': False, 'mlp_bias': False, 'initializer_range': 0.02,
        'bos_token_id': vocab[corpus.BEGIN], 'eos_token_id': vocab[corpus.END],
        'torch_dtype': 'bfloat16' if a.save_dtype == 'bf16' else 'float32', 'use_cache': True,
    }


def check_with_tokenizers(tok_path, pairs):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return 'skipped (no tokenizers library)'
    tk = Tokenizer.from_file(tok_path)
    for text, ids in pairs:
        got = tk.encode(text, add_special_tokens=False).ids
        if got != ids:
            raise SystemExit(f'tokenizers encodes differently than training: {text!r}\n{got}\n{ids}')
    return f'ok ({len(pairs)} documents)'


def check_with_transformers(folder, cfg, dtype):
    try:
        import transformers
    except ImportError:
        return 'skipped (no transformers library)'
    ref = Llama(cfg)
    state = {k: v.to(dtype).float() for k, v in torch.load(os.path.join(folder, '.state.pt')).items()}
    ref.load_state_dict(state, strict=False)
    ref.eval()
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([[cfg['bos_token_id'], 5, 300, 1000, 17, 42, 999, 2048, 7, cfg['eos_token_id']]])
    with torch.no_grad():
        diff = (hf(ids).logits - ref(ids)).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f'transformers logits differ from the trained model by {diff}')
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    msgs = [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Tell me about light.'}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if text != corpus.render_chat(msgs, True):
        raise RuntimeError(f'transformers renders the chat template as {text!r}')
    return f'ok (max |logit diff| {diff:.2e}, chat template equal)'


def lr_at(a, progress, step):
    warm = min(1.0, (step + 1) / a.warmup)
    return a.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(a, model, stream, log):
    dev = torch.device(a.device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    kw = {'fused': True} if dev.type == 'cuda' else {}
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, {'params': other, 'weight_decay': 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), **kw)
    data = torch.from_numpy(stream).long().to(dev)
    window = torch.arange(a.seq + 1, device=dev)
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    budget = a.minutes * 60
    t0, step, tokens, curve = time.time(), 0, 0, []
    while True:
        progress = (time.time() - t0) / budget
        if progress >= 1 or (a.max_steps and step >= a.max_steps):
            break
        for g in opt.param_groups:
            g['lr'] = lr_at(a, progress, step)
        starts = torch.randint(0, len(data) - a.seq - 1, (a.batch, 1), device=dev, generator=gen)
        batch = data[starts + window]  # (batch, seq + 1)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == 'cuda'):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += a.batch * a.seq
        if step % 100 == 0 or step == 1:
            el = time.time() - t0
            curve.append({'step': step, 'loss': round(loss.item(), 4), 'seconds': round(el, 1), 'tokens': tokens})
            log(f'step {step} loss {curve[-1]["loss"]} lr {opt.param_groups[0]["lr"]:.2e} {tokens / el / 1e6:.2f} Mtok/s {el:.0f}s')
    if dev.type == 'cuda':
        torch.cuda.synchronize()
    return {'steps': step, 'tokens': tokens, 'seconds': round(time.time() - t0, 1), 'curve': curve}


def main(argv=None):
    a = args_of(argv)
    torch.manual_seed(a.seed)
    lines = []

    def log(s):
        print(s, flush=True)
        lines.append(s)

    t_start = time.time()
    verses = corpus.parse_bible(a.corpus)
    log(f'{len(verses)} verses from {a.corpus}')
    texts = [t for _, t in verses] + corpus.TOPIC_QUESTIONS + corpus.REF_QUESTIONS + corpus.FINISH_QUESTIONS + corpus.SYSTEM_PROMPTS
    texts += [q for q, _ in corpus.HELLO] + [ans for _, ans in corpus.HELLO] + [r for r, _ in verses]
    vocab, merges = bpe.train(texts, a.vocab, corpus.SPECIALS)
    a.vocab = len(vocab)
    enc = bpe.Encoder(vocab, merges, corpus.SPECIALS)
    docs = corpus.Documents(verses, enc, seed=a.seed)
    pairs = corpus.check_assembly(docs)
    folder = os.path.join(a.out, a.name)
    os.makedirs(folder, exist_ok=True)
    bpe.write_tokenizer_json(os.path.join(folder, 'tokenizer.json'), vocab, merges, corpus.SPECIALS)
    checks = {'tokenizers': check_with_tokenizers(os.path.join(folder, 'tokenizer.json'), pairs)}
    log(f'tokenizer: {len(vocab)} tokens, {len(merges)} merges; tokenizers check: {checks["tokenizers"]}')
    stream = docs.stream(a.stream_tokens)
    log(f'stream: {len(stream)} tokens ({time.time() - t_start:.0f}s so far)')

    cfg = model_config(a, vocab)
    model = Llama(cfg).to(a.device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f'model: {n_params / 1e6:.2f}M parameters on {a.device}')
    stats = train(a, model, stream, log)
    model.eval()

    samples = []
    eos = set([cfg['eos_token_id']])
    for q in SAMPLE_PROMPTS:
        prompt = enc.encode_with_specials(corpus.render_chat([{'role': 'user', 'content': q}], True))
        out, hit = model.generate(prompt, 120, eos)
        samples.append({'prompt': q, 'reply': enc.decode([i for i in out if i not in eos]), 'stoppedAtEos': hit, 'ids': out})
        log(f'> {q}\n  {samples[-1]["reply"]!r} (eos: {hit})')
    dtype = torch.bfloat16 if a.save_dtype == 'bf16' else torch.float32
    export.write_folder(folder, model.cpu(), vocab, merges, dtype)
    with open(os.path.join(folder, 'tokenizer-samples.json'), 'w') as f:
        json.dump([{'text': t, 'ids': i} for t, i in pairs[:40]], f)
    torch.save({k: v for k, v in model.state_dict().items()}, os.path.join(folder, '.state.pt'))
    failed = None
    try:
        checks['transformers'] = check_with_transformers(folder, cfg, dtype)
    except Exception as e:  # the tar is still written: the weights are not lost to a failed check
        checks['transformers'] = f'FAILED: {e}'
        failed = e
    os.remove(os.path.join(folder, '.state.pt'))
    log(f'transformers check: {checks["transformers"]}')
    report = {'args': vars(a), 'parameters': n_params, 'verses': len(verses), 'streamTokens': len(stream),
              'training': stats, 'checks': checks, 'samples': samples, 'torch': torch.__version__,
              'device': torch.cuda.get_device_name() if a.device == 'cuda' else 'cpu'}
    with open(os.path.join(folder, 'train-report.json'), 'w') as f:
        json.dump(report, f, indent=1)
    tar_path = os.path.join(a.out, f'{a.name}.tar')
    with tarfile.open(tar_path, 'w') as t:
        t.add(folder, arcname=a.name)
    log(f'wrote {tar_path} ({os.path.getsize(tar_path) / 1e6:.1f} MB) in {time.time() - t_start:.0f}s')
    with open(os.path.join(a.out, 'train-log.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    if failed:
        sys.exit(1)


if __name__ == '__main__':
    main()
