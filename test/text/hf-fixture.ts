/**
 * Writes a small but real Hugging Face tokenizer folder (byte-level BPE, like Llama 3's, with a
 * 256-byte alphabet, a few merges and two special tokens) plus a chat template, into a temp dir.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function byteAlphabet(): string[] {
  const out: string[] = [];
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    const isPrintable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    out.push(String.fromCodePoint(isPrintable ? b : 256 + shifted++));
  }
  return out;
}

export const HF_SPECIAL = { bos: 300, eos: 301, eot: 302 };

export function writeHfTokenizerFolder(opts: { withTemplate?: boolean } = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'ms-hf-tok-'));
  const alphabet = byteAlphabet();
  const vocab: Record<string, number> = {};
  alphabet.forEach((ch, i) => (vocab[ch] = i));
  const merges = [['h', 'e'], ['l', 'l'], ['he', 'll'], ['hell', 'o'], ['Ġ', 'w']];
  let next = 256;
  for (const [a, b] of merges) vocab[a + b] = next++;
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      { id: HF_SPECIAL.bos, content: '<s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: HF_SPECIAL.eos, content: '</s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: HF_SPECIAL.eot, content: '<eot>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: merges.map(([a, b]) => `${a} ${b}`) },
  };
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  const config: Record<string, unknown> = { bos_token: '<s>', eos_token: '</s>', tokenizer_class: 'PreTrainedTokenizerFast' };
  if (opts.withTemplate !== false) {
    config.chat_template =
      "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] | trim }}<eot>{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}";
  }
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: HF_SPECIAL.bos, eos_token_id: [HF_SPECIAL.eos, HF_SPECIAL.eot] }));
  return dir;
}
