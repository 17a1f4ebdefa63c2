/**
 * Admission at the router, before a request runs:
 * - capacity: a request whose prompt + max tokens need more KV than any generating engine's
 *   whole pool (pages x page size, from the engines' status) can never run: PROMPT_TOO_LONG
 *   (HTTP 400) naming the numbers. A request without max_tokens gets at most what fits.
 * - queue limit: with `maxQueue` set, a request arriving while that many requests are waiting
 *   for their first token is refused with OVERLOADED (HTTP 429 + Retry-After). Nothing is ever
 *   refused for load after it was admitted.
 * Engines whose status is not known yet are not counted; with none known the check passes
 * (the engine's own check, the same arithmetic, still refuses).
 */
import { MicroserveError } from '../../common/errors.ts';
import type { EnginePool } from './engine-pool.ts';
import type { PlanEngine } from './types.ts';

export interface AdmissionDeps {
  pool: EnginePool;
  /** Engines of the plan in force. */
  planEngines: () => PlanEngine[];
  /** Requests in flight without a first token. */
  numQueued: () => number;
  /** Smoothed time to first token (s): the Retry-After hint. */
  ttftS: () => number;
  /** [maxQueue=null] null: unlimited. */
  maxQueue: number | null;
  contextLength: number;
}

/** The largest pool of a generating engine, as pages and page size (null: none known). */
interface Pool {
  engine: string;
  numPages: number;
  pageSize: number;
}

export class Admission {
  constructor(private readonly d: AdmissionDeps) {}

  /** OVERLOADED (429) when the router's queue is full. */
  checkQueue(): void {
    const max = this.d.maxQueue;
    if (max === null || this.d.numQueued() < max) return;
    const retryAfterS = Math.min(60, Math.max(1, Math.ceil(this.d.ttftS())));
    throw new MicroserveError('OVERLOADED', `The server is busy: ${this.d.numQueued()} requests are waiting for their first token (router.maxQueue ${max}); retry in ${retryAfterS} s.`, { retryAfterS });
  }

  /** Most tokens (prompt + generated) one request can hold on a generating engine; null if unknown. */
  maxRequestTokens(): number | null {
    const p = this.largestPool();
    return p ? Math.min(p.numPages * p.pageSize, this.d.contextLength) : null;
  }

  /** PROMPT_TOO_LONG (400) unless `numPrompt + maxTokens` fits some generating engine's pool. */
  checkFits(numPrompt: number, maxTokens: number, param: string): void {
    const p = this.largestPool();
    if (!p) return;
    const positions = Math.min(numPrompt + maxTokens, this.d.contextLength);
    const numPages = Math.ceil(positions / p.pageSize);
    if (numPages <= p.numPages) return;
    throw new MicroserveError(
      'PROMPT_TOO_LONG',
      `This request needs KV for ${positions} tokens (${numPrompt} in the prompt + ${maxTokens} to generate) = ${numPages} pages of ${p.pageSize}; the largest engine KV pool (${p.engine}) holds ${p.numPages} pages = ${p.numPages * p.pageSize} tokens. Lower '${param}' or shorten the prompt.`,
      { param, numPrompt, maxTokens, kvTokens: p.numPages * p.pageSize },
    );
  }

  private largestPool(): Pool | null {
    const plan = this.d.planEngines();
    const gen = plan.filter((e) => e.role !== 'prefill');
    let best: Pool | null = null;
    for (const e of gen.length > 0 ? gen : plan) {
      const st = this.d.pool.status(e.name);
      if (!st || !(st.pageSize > 0)) continue;
      if (!best || st.kv.total * st.pageSize > best.numPages * best.pageSize) best = { engine: e.name, numPages: st.kv.total, pageSize: st.pageSize };
    }
    return best;
  }
}
