/** Checks on engine message fields: every failure is a typed error naming the field. */
import { MicroserveError } from '../../common/errors.ts';
import type { SamplingParams } from '../messages.ts';

export function checkId(id: unknown, op: string): string {
  if (typeof id !== 'string' || id.length === 0) throw new MicroserveError('BAD_REQUEST', `${op}: id must be a non-empty string`, { field: 'id' });
  return id;
}

/** Token ids: a non-empty array of integers in [0, vocabSize). */
export function checkTokens(ids: unknown, vocabSize: number, op: string, field = 'promptIds'): number[] {
  if (!Array.isArray(ids) || ids.length === 0) throw new MicroserveError('BAD_REQUEST', `${op}: ${field} must be a non-empty array of token ids`, { field });
  for (let i = 0; i < ids.length; i++) {
    const t = ids[i];
    if (!Number.isInteger(t) || t < 0 || t >= vocabSize) {
      throw new MicroserveError('BAD_TOKEN', `${op}: ${field}[${i}] = ${JSON.stringify(t)} is not a token id in [0, ${vocabSize})`, { field, index: i });
    }
  }
  return ids as number[];
}

export function checkInt(v: unknown, op: string, field: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(v) || (v as number) < min || (v as number) > max) {
    throw new MicroserveError('BAD_REQUEST', `${op}: ${field} must be an integer in [${min}, ${max}] (got ${JSON.stringify(v)})`, { field });
  }
  return v as number;
}

/** Sampling parameters with defaults filled: temperature 0, topP 1, no stop tokens. */
export function checkSampling(s: unknown, op: string): SamplingParams {
  if (typeof s !== 'object' || s === null) throw new MicroserveError('BAD_REQUEST', `${op}: sampling must be an object`, { field: 'sampling' });
  const p = s as Partial<SamplingParams>;
  const maxTokens = checkInt(p.maxTokens, op, 'sampling.maxTokens', 0);
  const temperature = p.temperature ?? 0;
  if (typeof temperature !== 'number' || !(temperature >= 0) || !Number.isFinite(temperature)) {
    throw new MicroserveError('BAD_REQUEST', `${op}: sampling.temperature must be a number >= 0`, { field: 'sampling.temperature' });
  }
  const topP = p.topP ?? 1;
  if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) throw new MicroserveError('BAD_REQUEST', `${op}: sampling.topP must be in (0, 1]`, { field: 'sampling.topP' });
  const seed = p.seed === undefined || p.seed === null ? undefined : checkInt(p.seed, op, 'sampling.seed', 0, 0xffffffff);
  const stop = p.stopTokenIds ?? [];
  if (!Array.isArray(stop) || !stop.every((t) => Number.isInteger(t))) {
    throw new MicroserveError('BAD_REQUEST', `${op}: sampling.stopTokenIds must be an array of token ids`, { field: 'sampling.stopTokenIds' });
  }
  return { maxTokens, temperature, topP, seed, stopTokenIds: stop };
}

/** The limits a request must fit in. */
export interface Capacity {
  maxPositions: number;
  numPages: number;
  pageSize: number;
}

/**
 * PROMPT_TOO_LONG unless the prompt leaves room in the context and its KV (with maxTokens more
 * positions, capped at the context) fits the whole pool, so that a lone request can always finish.
 */
export function checkFits(len: number, maxTokens: number, cap: Capacity, op: string): void {
  if (len >= cap.maxPositions) {
    throw new MicroserveError('PROMPT_TOO_LONG', `${op}: prompt of ${len} tokens leaves no room in the ${cap.maxPositions}-token context`);
  }
  const positions = Math.min(len + maxTokens, cap.maxPositions);
  const pages = Math.ceil(positions / cap.pageSize);
  if (pages > cap.numPages) {
    throw new MicroserveError('PROMPT_TOO_LONG', `${op}: ${len} prompt + ${maxTokens} max tokens need ${pages} KV pages, the pool has ${cap.numPages}`);
  }
}
