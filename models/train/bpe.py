"""Byte-level BPE (GPT-2 style): trainer, encoder and the Hugging Face `tokenizer.json` writer.

Pre-tokenization is GPT-2's regex over text whose bytes are mapped to printable characters
(`bytes_to_unicode`), exactly what Hugging Face's `ByteLevel` pre-tokenizer with
`use_regex: true` does; merges apply within a pre-token by rank. So `encode` here gives the ids
that `@huggingface/tokenizers` gives for the written `tokenizer.json` (test/text/kjv-tokenizer.test.ts
checks this on samples the trainer writes). Special tokens are whole tokens that split the text
before pre-tokenization (`encode_with_specials`).
"""
from collections import Counter, defaultdict
import json

import regex

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_PRE = regex.compile(GPT2_PATTERN)


def bytes_to_unicode():
    """GPT-2's reversible map of the 256 bytes to printable unicode characters."""
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_CHARS = bytes_to_unicode()


def pre_tokens(text):
    """The pre-tokens of `text`, each as its byte-level string."""
    return [''.join(BYTE_CHARS[b] for b in piece.encode('utf-8')) for piece in _PRE.findall(text)]


def train(texts, vocab_size, specials):
    """Learns merges until the vocabulary (256 bytes + merges + specials) has `vocab_size` tokens.

    Returns (vocab: token -> id, merges: [(a, b)] in rank order). Ids: bytes 0..255 in
    `bytes_to_unicode` order, then merges, then the specials.
    """
    words = Counter()
    for t in texts:
        words.update(pre_tokens(t))
    # each distinct pre-token as a list of symbols, with its count
    syms = [list(w) for w in words]
    freq = list(words.values())
    pairs = Counter()
    where = defaultdict(set)  # pair -> indices of words that contain it
    for i, s in enumerate(syms):
        for a, b in zip(s, s[1:]):
            pairs[(a, b)] += freq[i]
            where[(a, b)].add(i)
    vocab = {c: i for i, c in enumerate(BYTE_CHARS.values())}
    merges = []
    num_merges = vocab_size - 256 - len(specials)
    while len(merges) < num_merges and pairs:
        # most frequent pair; ties broken by the pair itself so training is deterministic
        best, count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if count < 2:
            break
        a, b = best
        merged = a + b
        merges.append(best)
        vocab[merged] = len(vocab)
        for i in list(where[best]):
            s = syms[i]
            f = freq[i]
            for x, y in zip(s, s[1:]):
                pairs[(x, y)] -= f
                if pairs[(x, y)] <= 0:
                    del pairs[(x, y)]
                where[(x, y)].discard(i)
            out = []
            j = 0
            while j < len(s):
                if j + 1 < len(s) and s[j] == a and s[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            syms[i] = out
            for x, y in zip(out, out[1:]):
                pairs[(x, y)] += f
                where[(x, y)].add(i)
        where.pop(best, None)
    for sp in specials:
        vocab[sp] = len(vocab)
    return vocab, merges


class Encoder:
    """Byte-level BPE encoding with a cache per pre-token."""

    def __init__(self, vocab, merges, specials):
        self.vocab = vocab
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.specials = {s: vocab[s] for s in specials}
        self.special_re = regex.compile('(' + '|'.join(regex.escape(s) for s in specials) + ')') if specials else None
        self.cache = {}
        self.inverse = {i: t for t, i in vocab.items()}
        self.byte_of = {c: b for b, c in BYTE_CHARS.items()}

    def _bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        s = list(word)
        while len(s) > 1:
            ranked = [(self.ranks.get((x, y), 1 << 30), k) for k, (x, y) in enumerate(zip(s, s[1:]))]
            r, k = min(ranked)
            if r == 1 << 30:
                break
            a, b = s[k], s[k + 1]
            out = []
            j = 0
            while j < len(s):
                if j + 1 < len(s) and s[j] == a and s[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            s = out
        ids = [self.vocab[t] for t in s]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        """Ids of plain text (special-token strings in it are NOT treated as special)."""
        ids = []
        for w in pre_tokens(text):
            ids.extend(self._bpe(w))
        return ids

    def encode_with_specials(self, text):
        """Ids of text in which special-token strings are the special tokens (as HF does)."""
        if self.special_re is None:
            return self.encode(text)
        ids = []
        for part in self.special_re.split(text):
            if part in self.specials:
                ids.append(self.specials[part])
            elif part:
                ids.extend(self.encode(part))
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            t = self.inverse[i]
            if t in self.specials:
                out.extend(t.encode('utf-8'))
            else:
                out.extend(self.byte_of[c] for c in t)
        return out.decode('utf-8', errors='replace')


def tokenizer_json(vocab, merges, specials):
    """The Hugging Face `tokenizer.json` object of this byte-level BPE."""
    byte_level = {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': True}
    return {
        'version': '1.0',
        'truncation': None,
        'padding': None,
        'added_tokens': [
            {'id': vocab[s], 'content': s, 'single_word': False, 'lstrip': False, 'rstrip': False, 'normalized': False, 'special': True}
            for s in specials
        ],
        'normalizer': None,
        'pre_tokenizer': byte_level,
        'post_processor': {**byte_level, 'trim_offsets': False},
        'decoder': byte_level,
        'model': {
            'type': 'BPE',
            'dropout': None,
            'unk_token': None,
            'continuing_subword_prefix': None,
            'end_of_word_suffix': None,
            'fuse_unk': False,
            'byte_fallback': False,
            'ignore_merges': False,
            'vocab': {t: i for t, i in vocab.items() if t not in specials},
            'merges': [f'{a} {b}' for a, b in merges],
        },
    }


def write_tokenizer_json(path, vocab, merges, specials):
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(tokenizer_json(vocab, merges, specials), f, ensure_ascii=False)
