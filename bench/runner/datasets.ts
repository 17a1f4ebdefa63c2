/**
 * Synthetic workloads: each request is a prompt of token ids (so its length is exact, no
 * tokenizer in the loop) and a fixed output length (sent as `max_tokens` with `ignore_eos`).
 * Token ids are drawn uniformly from `[0, tokenIdMax)`. `microserve bench` sets it to the served
 * model's ordinary tokens (served-model.ts: no special tokens, so a prompt never holds BOS/EOS);
 * the default here, 128000, is the Llama 3 vocabulary without its special tokens.
 *
 * - `random`: lengths uniform in [floor(L·(1−r)), floor(L·(1+r))] for input and output, as
 *   `vllm bench serve --dataset-name random` draws them (the reference long-input setting is
 *   3000±5 in, 100±5 out; one ratio cannot say both, so `randomInputRange` /
 *   `randomOutputRange` give ± tokens: `--random-input-len 3000 --random-input-range 5
 *   --random-output-len 100 --random-output-range 5`).
 * - `chat`: ShareGPT-like lengths: lognormal input and output lengths whose (untruncated) means
 *   are the ShareGPT means the vLLM paper reports (161 input and 338 output tokens; Kwon et al.,
 *   "Efficient Memory Management for Large Language Model Serving with PagedAttention", SOSP
 *   2023, Fig. 11); the log-space spreads (1.0 input, 0.9 output) are our choice to give the
 *   long right tail those histograms show. Draws are kept within vLLM's ShareGPT filter (4 ≤
 *   input ≤ 1024, output ≥ 4, input + output ≤ 2048), which lowers the means a little.
 * - `shared-prefix`: `gspNumGroups` long common prefixes (system prompts of `gspSystemPromptLen`
 *   tokens), each request one prefix + its own question of `gspQuestionLen` tokens, output
 *   `gspOutputLen` (SGLang's `generated-shared-prefix` workload, same flag names); requests of
 *   all groups interleaved in a seeded order.
 */
import { Rng, subSeed } from './rng.ts';

export interface BenchRequest {
  promptIds: number[];
  /** Exact number of tokens to generate (`max_tokens`, with `ignore_eos`). */
  outputLen: number;
}

export interface SyntheticOptions {
  numPrompts: number;
  seed: number;
  /** [tokenIdMax=128000] prompt ids are drawn from [0, tokenIdMax). */
  tokenIdMax?: number;
  /** random: [randomInputLen=1024] */
  randomInputLen?: number;
  /** random: [randomOutputLen=128] */
  randomOutputLen?: number;
  /** random: [randomRangeRatio=0] lengths vary by ± this share. */
  randomRangeRatio?: number;
  /** random: [randomInputRange] input varies by ± this many tokens (overrides the ratio for input). */
  randomInputRange?: number;
  /** random: [randomOutputRange] output varies by ± this many tokens (overrides the ratio for output). */
  randomOutputRange?: number;
  /** shared-prefix: [gspNumGroups=4] number of distinct prefixes. */
  gspNumGroups?: number;
  /** shared-prefix: [gspSystemPromptLen=2048] prefix length. */
  gspSystemPromptLen?: number;
  /** shared-prefix: [gspQuestionLen=128] per-request suffix length. */
  gspQuestionLen?: number;
  /** shared-prefix: [gspOutputLen=256] */
  gspOutputLen?: number;
}

export const CHAT_SHAPE = { inputMean: 161, outputMean: 338, inputSigma: 1.0, outputSigma: 0.9, minLen: 4, maxInput: 1024, maxTotal: 2048 };

function ids(rng: Rng, n: number, max: number): number[] {
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rng.next() * max);
  return out;
}

function lenRange(len: number, ratio: number, plusMinus?: number): [number, number] {
  if (plusMinus !== undefined) return [Math.max(1, len - plusMinus), Math.max(1, len + plusMinus)];
  return [Math.max(1, Math.floor(len * (1 - ratio))), Math.max(1, Math.floor(len * (1 + ratio)))];
}

export function randomDataset(o: SyntheticOptions): BenchRequest[] {
  const rng = new Rng(subSeed(o.seed, 'random'));
  const ratio = o.randomRangeRatio ?? 0;
  if (!(ratio >= 0 && ratio < 1)) throw new RangeError(`--random-range-ratio must be in [0, 1) (got ${ratio})`);
  const [inLo, inHi] = lenRange(o.randomInputLen ?? 1024, ratio, o.randomInputRange);
  const [outLo, outHi] = lenRange(o.randomOutputLen ?? 128, ratio, o.randomOutputRange);
  const max = o.tokenIdMax ?? 128000;
  return Array.from({ length: o.numPrompts }, () => {
    const inLen = rng.int(inLo, inHi);
    return { promptIds: ids(rng, inLen, max), outputLen: rng.int(outLo, outHi) };
  });
}

/** Lognormal `mu` for a target mean: mean = exp(mu + sigma²/2). */
const muFor = (mean: number, sigma: number) => Math.log(mean) - (sigma * sigma) / 2;

export function chatDataset(o: SyntheticOptions): BenchRequest[] {
  const rng = new Rng(subSeed(o.seed, 'chat'));
  const c = CHAT_SHAPE;
  const muIn = muFor(c.inputMean, c.inputSigma);
  const muOut = muFor(c.outputMean, c.outputSigma);
  const max = o.tokenIdMax ?? 128000;
  const out: BenchRequest[] = [];
  while (out.length < o.numPrompts) {
    const inLen = Math.round(rng.lognormal(muIn, c.inputSigma));
    const outLen = Math.round(rng.lognormal(muOut, c.outputSigma));
    if (inLen < c.minLen || outLen < c.minLen || inLen > c.maxInput || inLen + outLen > c.maxTotal) continue;
    out.push({ promptIds: ids(rng, inLen, max), outputLen: outLen });
  }
  return out;
}

export function sharedPrefixDataset(o: SyntheticOptions): BenchRequest[] {
  const rng = new Rng(subSeed(o.seed, 'shared-prefix'));
  const numGroups = o.gspNumGroups ?? 4;
  if (!(numGroups >= 1)) throw new RangeError(`--gsp-num-groups must be >= 1 (got ${numGroups})`);
  const max = o.tokenIdMax ?? 128000;
  const prefixes = Array.from({ length: numGroups }, () => ids(rng, o.gspSystemPromptLen ?? 2048, max));
  const reqs = Array.from({ length: o.numPrompts }, (_, i) => ({
    promptIds: [...prefixes[i % numGroups], ...ids(rng, o.gspQuestionLen ?? 128, max)],
    outputLen: o.gspOutputLen ?? 256,
  }));
  return rng.shuffle(reqs);
}

export const SYNTHETIC = { random: randomDataset, chat: chatDataset, 'shared-prefix': sharedPrefixDataset } as const;
