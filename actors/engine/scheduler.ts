/**
 * Continuous batching with chunked prefill. Each step packs at most `maxBatchTokens` tokens and
 * at most `maxNumSeqs` sequences:
 *   1. running requests one token from the end (decodes, and prefills down to their last token),
 *      oldest first;
 *   2. running requests in the middle of a chunked prefill, oldest first, one chunk each (as
 *      much of the remaining token budget as they need);
 *   3. waiting requests, in order (FIFO): admitted while fewer than `maxNumSeqs` requests run and
 *      their first chunk's pages can be had (their cached prefix is matched and locked first).
 *      Admission never preempts, and does not run in a step that preempted.
 * When a running request cannot get a page, the youngest running request not yet in this step
 * is preempted (its computed full pages go to the prefix cache, it goes back to the head of the
 * queue with its generated tokens as prompt); if that is the request itself, it waits.
 *
 * Latency under load (the vLLM V1 policy): decodes are planned first, so a step's prefill work
 * is only what the token budget leaves. A step therefore costs at most `maxBatchTokens` tokens
 * of compute, and that budget, not the prompt length, bounds the inter-token latency of the
 * running decodes: a long prompt is spread over several steps instead of stalling them. The
 * default budget (messages.ts defaultMaxBatchTokens: 1024 tokens on a GPU, 512 on CPU) keeps a
 * mixed step within a few decode steps' cost (the weights are read once for both) while prefill
 * runs at GEMM efficiency, and leaves room for a full decode batch next to the prefill that keeps
 * it full; a larger budget buys prefill throughput with ITL (prefill-only engines may use 4096+).
 */
import type { KvCacheManager } from '../kvcache/manager.ts';
import type { Request } from './request.ts';

/** One sequence of a step: feed `req`'s tokens [start, start + n). */
export interface StepEntry {
  req: Request;
  start: number;
  n: number;
}

export interface StepPlan {
  entries: StepEntry[];
  /** Send requests found fully computed at admission (their whole range was cached). */
  ready: Request[];
}

/** Per-step limits. */
export interface SchedulerLimits {
  /** Tokens per step: decodes plus prefill chunks. */
  maxBatchTokens: number;
  /** Sequences per step, and requests running (holding pages) at once, admissions included. */
  maxNumSeqs: number;
}

export interface SchedulerHooks {
  onAdmit(req: Request, matchedLen: number): void;
  onPreempt(req: Request): void;
}

export class Scheduler {
  /** Not admitted (no pages), in order; preempted requests go back to the front. */
  readonly waiting: Request[] = [];
  /** Admitted, holding pages, in admission order (youngest last). */
  readonly running: Request[] = [];
  private numAdmitted = 0;
  numPreempted = 0;

  constructor(
    private readonly kv: KvCacheManager,
    private readonly limits: SchedulerLimits,
    private readonly hooks: SchedulerHooks,
  ) {}

  get isEmpty(): boolean {
    return this.waiting.length === 0 && this.running.length === 0;
  }

  enqueue(req: Request): void {
    req.state = 'waiting';
    this.waiting.push(req);
  }

  /** Adds a request that already holds its pages (start_generate on a reservation). */
  addRunning(req: Request): void {
    req.state = 'running';
    req.admitOrder = this.numAdmitted++;
    this.running.push(req);
  }

  /** Takes `req` out of both queues (its pages are the caller's business). */
  remove(req: Request): void {
    let i = this.running.indexOf(req);
    if (i >= 0) this.running.splice(i, 1);
    i = this.waiting.indexOf(req);
    if (i >= 0) this.waiting.splice(i, 1);
  }

  schedule(): StepPlan {
    const entries: StepEntry[] = [];
    const ready: Request[] = [];
    const planned = new Set<Request>();
    let budget = this.limits.maxBatchTokens;
    const maxNumSeqs = this.limits.maxNumSeqs;
    const numPreempted = this.numPreempted;
    for (const isLastPass of [true, false]) {
      for (const req of [...this.running]) {
        if (budget === 0 || entries.length >= maxNumSeqs) break;
        if (planned.has(req) || req.state !== 'running' || (req.numRemaining === 1) !== isLastPass) continue;
        const n = Math.min(req.numRemaining, budget);
        if (!this.ensurePages(req, req.numComputed + n, planned)) continue;
        entries.push({ req, start: req.numComputed, n });
        planned.add(req);
        budget -= n;
      }
    }
    // After a preemption the pool is short: admitting now would take back the pages just freed.
    while (budget > 0 && this.waiting.length > 0 && this.numPreempted === numPreempted && this.running.length < maxNumSeqs && entries.length < maxNumSeqs) {
      const req = this.waiting[0];
      const { seq, matchedLen } = this.kv.openSeq(req.key, req.tokens(), { maxMatchLen: req.maxMatchLen });
      const n = Math.min(req.totalLen - matchedLen, budget);
      if (n > 0 && !this.kv.canGrow(seq, matchedLen + n)) {
        this.kv.closeSeq(seq);
        break;
      }
      this.kv.grow(seq, matchedLen + n);
      this.waiting.shift();
      req.seq = seq;
      req.numComputed = matchedLen;
      this.addRunning(req);
      this.hooks.onAdmit(req, matchedLen);
      if (n === 0) {
        ready.push(req);
        continue;
      }
      entries.push({ req, start: matchedLen, n });
      planned.add(req);
      budget -= n;
    }
    return { entries, ready };
  }

  /** Grows `req` to `numTokens` positions, preempting younger requests; false if `req` had to wait. */
  private ensurePages(req: Request, numTokens: number, planned: Set<Request>): boolean {
    while (!this.kv.canGrow(req.seq!, numTokens)) {
      let victim: Request | null = null;
      for (let i = this.running.length - 1; i >= 0; i--) {
        if (!planned.has(this.running[i])) {
          victim = this.running[i];
          break;
        }
      }
      if (!victim) return false;
      this.preempt(victim);
      if (victim === req) return false;
    }
    this.kv.grow(req.seq!, numTokens);
    return true;
  }

  private preempt(req: Request): void {
    this.kv.closeSeq(req.seq!, { tokens: req.tokens(), numValid: req.numComputed });
    req.seq = null;
    req.numComputed = 0;
    this.remove(req);
    req.state = 'waiting';
    this.waiting.unshift(req);
    this.numPreempted++;
    this.hooks.onPreempt(req);
  }
}
