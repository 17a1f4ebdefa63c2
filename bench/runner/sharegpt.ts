/**
 * The `sharegpt` workload: a ShareGPT JSON file (`--dataset-path`), e.g.
 * ShareGPT_V3_unfiltered_cleaned_split.json: an array of `{ conversations: [{ from, value }] }`.
 * As `vllm bench serve` does: the first turn is the prompt, the second (the reply) gives the
 * output length; conversations with fewer than two turns are skipped; the order is shuffled by
 * the seed; pairs outside 4 ≤ input ≤ 1024, output ≥ 4, input + output ≤ 2048 are dropped.
 * Text is tokenized by `encode`: the bench passes the served model's own tokenizer (the router's
 * `POST /tokenize`); without one, the Llama 3 tokenizer of actors/text (the presets' tokenizer;
 * exact for Llama 3 models, an approximation of lengths for others). Prompts go as token ids.
 */
import { readFileSync } from 'node:fs';
import { MicroserveError } from '../../common/errors.ts';
import { loadTokenizer } from '../../actors/text/loader.ts';
import type { BenchRequest } from './datasets.ts';
import { CHAT_SHAPE } from './datasets.ts';
import { Rng, subSeed } from './rng.ts';

interface Turn {
  from?: string;
  value?: string;
}

export interface ShareGptOptions {
  path: string;
  numPrompts: number;
  seed: number;
  /** [outputLen] a fixed output length instead of the reply's (vLLM's --sharegpt-output-len). */
  outputLen?: number;
  /** [encode=the Llama 3 tokenizer] text → ids, with or without BOS. */
  encode?: TextEncoder;
}

/** Text → token ids (`addBos`: prepend the model's BOS). */
export type TextEncoder = (text: string, addBos: boolean) => Promise<number[]>;

async function llama3Encoder(): Promise<TextEncoder> {
  const tok = await loadTokenizer({ folder: null, isPreset: true });
  if (!tok) throw new MicroserveError('NO_TOKENIZER', 'the Llama 3 tokenizer is not available');
  return async (text, addBos) => tok.encode(text, { addBos });
}

export async function shareGptDataset(o: ShareGptOptions): Promise<BenchRequest[]> {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(o.path, 'utf8'));
  } catch (e) {
    throw new MicroserveError('BAD_CONFIG', `--dataset-path ${o.path}: cannot read a ShareGPT JSON file: ${(e as Error).message}`, { field: 'dataset-path' });
  }
  if (!Array.isArray(data)) throw new MicroserveError('BAD_CONFIG', `--dataset-path ${o.path}: expected a JSON array of { conversations: [...] }`, { field: 'dataset-path' });
  const pairs = data
    .map((d) => (d as { conversations?: Turn[] })?.conversations)
    .filter((c): c is Turn[] => Array.isArray(c) && c.length >= 2 && typeof c[0]?.value === 'string' && typeof c[1]?.value === 'string')
    .map((c) => [c[0].value!, c[1].value!] as const);
  new Rng(subSeed(o.seed, 'sharegpt')).shuffle(pairs);
  const encode = o.encode ?? (await llama3Encoder());
  const f = CHAT_SHAPE;
  const out: BenchRequest[] = [];
  for (const [prompt, reply] of pairs) {
    if (out.length >= o.numPrompts) break;
    const promptIds = await encode(prompt, true);
    const outputLen = o.outputLen ?? (await encode(reply, false)).length;
    if (promptIds.length < f.minLen || outputLen < f.minLen) continue;
    if (o.outputLen === undefined && (promptIds.length > f.maxInput || promptIds.length + outputLen > f.maxTotal)) continue;
    out.push({ promptIds, outputLen });
  }
  if (out.length < o.numPrompts) {
    throw new MicroserveError('BAD_CONFIG', `--dataset-path ${o.path}: only ${out.length} usable conversations for --num-prompts ${o.numPrompts}`, { field: 'num-prompts' });
  }
  return out;
}
