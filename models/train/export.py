"""Writes a Hugging Face model folder: config.json, generation_config.json, tokenizer.json,
tokenizer_config.json (chat template, BOS/EOS) and model.safetensors (own writer: 8-byte
little-endian header length, JSON header padded to 8 bytes, then the tensors' bytes)."""
import json
import os
import struct

import torch

import bpe
import corpus

DTYPES = {torch.bfloat16: ('BF16', torch.int16), torch.float32: ('F32', torch.float32)}


def write_safetensors(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        tag, view = DTYPES[t.dtype]
        data = t.view(view).numpy().tobytes()
        header[name] = {'dtype': tag, 'shape': list(t.shape), 'data_offsets': [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header['__metadata__'] = metadata
    raw = json.dumps(header, separators=(',', ':')).encode('utf-8')
    raw += b' ' * (-len(raw) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def write_folder(folder, model, vocab, merges, dtype=torch.bfloat16):
    os.makedirs(folder, exist_ok=True)
    c = model.config
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        json.dump(c, f, indent=2)
    gen = {'bos_token_id': c['bos_token_id'], 'eos_token_id': c['eos_token_id'], 'max_new_tokens': 256}
    with open(os.path.join(folder, 'generation_config.json'), 'w') as f:
        json.dump(gen, f, indent=2)
    bpe.write_tokenizer_json(os.path.join(folder, 'tokenizer.json'), vocab, merges, corpus.SPECIALS)
    tok_cfg = {
        'tokenizer_class': 'PreTrainedTokenizerFast',
        'bos_token': corpus.BEGIN,
        'eos_token': corpus.END,
        'pad_token': corpus.END,
        'model_max_length': c['max_position_embeddings'],
        'clean_up_tokenization_spaces': False,
        'chat_template': corpus.CHAT_TEMPLATE,
        'added_tokens_decoder': {
            str(vocab[s]): {'content': s, 'lstrip': False, 'normalized': False, 'rstrip': False, 'single_word': False, 'special': True}
            for s in corpus.SPECIALS
        },
    }
    with open(os.path.join(folder, 'tokenizer_config.json'), 'w') as f:
        json.dump(tok_cfg, f, indent=2)
    sd = model.state_dict()
    if c['tie_word_embeddings']:
        sd.pop('lm_head.weight', None)  # as transformers saves a tied head
    write_safetensors(os.path.join(folder, 'model.safetensors'), {k: v.to(dtype) for k, v in sd.items()}, {'format': 'pt'})
