/**
 * Structured outputs on one engine: the grammars of its requests (owned by the engine core, like
 * the penalty slots). The matchers live in worker threads (grammar-worker.ts), so a compile that
 * takes seconds never blocks the engine loop; each request holds a handle in one of them (the
 * least loaded when it opened). Lifecycle:
 * 1. admission (`check`, synchronous): refused at once where this engine cannot run it;
 * 2. `open`: compile (cached per worker), make the request's matcher, replay its earlier output
 *    (migration), compute the first mask: the request joins the scheduler only then;
 * 3. after each step, `accept`: each sampled token goes to its matcher (no mask: cheap), which
 *    tells what postprocessing needs now — an out-of-grammar token, a grammar that terminated,
 *    and, for a request that ends at this token unless its grammar completes, completion;
 * 4. the next step is submitted with its grammar rows gated (`prepare`): the workers write the
 *    rows' masks into one shared matrix while the forward runs, and the step runner hands it to the
 *    backend's mask gate (native/backend.ts ForwardSampling.maskGate), which waits for it between
 *    the logits and the sampling. A grammar found complete there (only a stop token allowed) ends
 *    its request with `stop` at once; its row's token is discarded;
 * 5. `release` with the request (its matcher freed).
 *
 * Both backends apply the mask (`SamplingExtras.allowedMask`): the CPU in its sampler, CUDA in
 * the logit-processing kernel before the sampling kernels (native/src/cuda/logit-processing.cu).
 */
import { availableParallelism } from 'node:os';
import { MicroserveError, type ErrorCode } from '../../../common/errors.ts';
import type { GrammarSpec } from '../../messages.ts';
import { GrammarSpecSchema } from '../../messages.ts';
import type { TokenizerSource } from '../../text/tokenizer.ts';
import type { Request } from '../request.ts';
import type { StepEntry } from '../scheduler.ts';
import type { GrammarStep } from './protocol.ts';
import { GrammarWorkerClient } from './worker-client.ts';

const FIELD = 'sampling.grammar';

/** Default grammar workers: min(4, floor(cores / 2)), at least 1 (one on a 2-core machine). */
export function defaultGrammarWorkers(): number {
  return Math.max(1, Math.min(4, Math.floor(availableParallelism() / 2)));
}

export interface GrammarsOptions {
  /** The model's tokenizer (its vocabulary); null: the model has none (grammars refused). */
  tokenizer: TokenizerSource | null;
  vocabSize: number;
  /** Tokens that end generation (the model's EOS): allowed where the grammar is complete. */
  eosTokenIds: number[];
  /** [cacheSize=64] compiled grammars kept per worker (LRU by spec text). */
  cacheSize?: number;
  /** [timeoutMs=60000] longest grammar call (see worker-client.ts). */
  timeoutMs?: number;
  /** [numWorkers=defaultGrammarWorkers()] worker threads (started on first use). */
  numWorkers?: number;
}

/** Host time of structured outputs (status, benchmarks). */
export interface GrammarStats {
  /** Steps whose sampled tokens went to the matchers, and the loop's wait for them (exposed). */
  numAccepts: number;
  acceptMs: number;
  /** Steps whose masks were computed while their forward ran, and the wall time of those computations (hidden up to the forward's length). */
  numFills: number;
  fillMs: number;
}

/** A step's mask matrix (grammar rows' masks, other rows all allowed); `ready` null when complete now, else settling once the workers filled it (never rejects). */
export interface StepMasks {
  /** (rows, ceil(vocab / 32)) uint32. */
  masks: Uint32Array;
  ready: Promise<void> | null;
}

/** What a fill tells the engine: a request whose grammar completed (ends with `stop`), or failed. */
export interface GrammarOutcomes {
  complete(req: Request): void;
  fail(req: Request, err: MicroserveError): void;
}

export class Grammars {
  readonly stats: GrammarStats = { numAccepts: 0, acceptMs: 0, numFills: 0, fillMs: 0 };
  /** Mask words per row. */
  readonly words: number;
  private readonly workers: GrammarWorkerClient[];
  /** Live matchers per worker (where the next request's goes). */
  private readonly load: number[];
  private nextHandle = 1;
  /** The step mask matrix, reused step after step (a step's forward settles before the next is built). */
  private scratch = new Uint32Array(new SharedArrayBuffer(0));

  constructor(private readonly o: GrammarsOptions) {
    this.words = Math.ceil(o.vocabSize / 32);
    const n = o.numWorkers ?? defaultGrammarWorkers();
    if (!Number.isInteger(n) || n < 1 || n > 64) throw new MicroserveError('BAD_CONFIG', `grammarWorkers must be an integer in [1, 64] (got ${n})`, { field: 'grammarWorkers' });
    const init = { tokenizer: o.tokenizer, vocabSize: o.vocabSize, eosTokenIds: o.eosTokenIds, cacheSize: o.cacheSize };
    this.workers = o.tokenizer ? Array.from({ length: n }, () => new GrammarWorkerClient(init, { timeoutMs: o.timeoutMs })) : [];
    this.load = this.workers.map(() => 0);
  }

  /** Worker threads this engine runs grammars on (0: the model has no tokenizer). */
  get numWorkers(): number {
    return this.workers.length;
  }

  /** The request's grammar spec checked (BAD_REQUEST naming sampling.grammar), or undefined; refused where this engine cannot run it. */
  check(raw: unknown, op: string): GrammarSpec | undefined {
    if (raw === undefined || raw === null) return undefined;
    const r = GrammarSpecSchema.safeParse(raw);
    if (!r.success) {
      const issue = r.error.issues[0];
      const field = [FIELD, ...issue.path].join('.');
      throw new MicroserveError('BAD_REQUEST', `${op}: ${field}: ${issue.message}`, { field });
    }
    if (this.workers.length === 0) throw new MicroserveError('BAD_REQUEST', `${op}: structured outputs need the model's tokenizer, and this model has none`, { field: FIELD });
    return r.data;
  }

  /** Opens `req`'s grammar (its sampling.grammar, checked by `check`) in the least loaded worker: matcher, earlier output replayed, first mask. */
  async open(req: Request): Promise<void> {
    const s = req.sampling!;
    const numPrior = s.numPriorOutput ?? 0;
    const handle = this.nextHandle++;
    const w = this.load.indexOf(Math.min(...this.load));
    this.load[w]++;
    let first: GrammarStep;
    try {
      first = await this.workers[w].open(handle, s.grammar!, FIELD, req.promptIds.slice(req.promptIds.length - numPrior));
    } catch (e) {
      this.load[w]--;
      throw e;
    }
    if (req.state === 'finished') {
      this.load[w]--;
      return this.workers[w].close([handle]);
    }
    req.grammarHandle = handle;
    req.grammarWorker = w;
    req.isGrammarComplete = first.isComplete;
    req.allowedMask = first.mask;
  }

  /**
   * After a forward: the rows that sampled a token for a request with a grammar feed it to their
   * matcher (all workers at once), and their next masks become pending. A grammar that terminated,
   * or completed at a request's last token (`isLast`: it would end by length), marks the request
   * complete; a token outside the grammar (a backend that ignored the mask) or a lost matcher fails
   * it through `fail`.
   */
  async accept(entries: StepEntry[], tokens: Int32Array, isLast: (req: Request) => boolean, fail: (req: Request, err: MicroserveError) => void): Promise<void> {
    const byWorker = this.workers.map(() => ({ reqs: [] as Request[], items: [] as { handle: number; token: number; isLast: boolean }[] }));
    let numItems = 0;
    entries.forEach(({ req, start, n }, i) => {
      if (req.grammarHandle < 0 || req.kind !== 'generate' || start + n !== req.totalLen || req.isAborted || req.state !== 'running') return;
      const b = byWorker[req.grammarWorker];
      b.reqs.push(req);
      b.items.push({ handle: req.grammarHandle, token: tokens[i], isLast: isLast(req) });
      numItems++;
    });
    if (numItems === 0) return;
    const t0 = performance.now();
    await Promise.all(
      byWorker.map(async ({ reqs, items }, w) => {
        if (items.length === 0) return;
        let steps: GrammarStep[];
        try {
          steps = await this.workers[w].accept(items);
        } catch (e) {
          for (const r of reqs) fail(r, e as MicroserveError);
          return;
        }
        steps.forEach((st, i) => {
          const req = reqs[i];
          req.allowedMask = null;
          if (st.error) return fail(req, new MicroserveError(st.error.code as ErrorCode, st.error.message));
          req.isGrammarComplete = st.isComplete;
          req.isMaskPending = !st.isComplete;
        });
      }),
    );
    this.stats.numAccepts++;
    this.stats.acceptMs += performance.now() - t0;
  }

  /**
   * The mask matrix of a step's sampling rows (null: no row has a grammar). Rows whose masks are
   * known now (after the open, or a retry's) are copied in, rows without a grammar allow
   * everything, and pending rows are left to the workers, which start at once: `ready` settles
   * when they are written (a failed worker's rows are written all-allowed, and their requests fail
   * through `outcomes`). The matrix is reused by the next step: the caller hands it to the step's
   * forward only, and the forward must settle before the next `prepare`.
   */
  prepare(rows: readonly (Request | null)[], outcomes: GrammarOutcomes): StepMasks | null {
    const hasGrammar = (r: Request | null): r is Request => !!r && r.grammarHandle >= 0 && r.kind === 'generate';
    if (!rows.some(hasGrammar)) return null;
    const w = this.words;
    const masks = this.take(rows.length * w);
    const byWorker = this.workers.map(() => ({ reqs: [] as Request[], items: [] as { handle: number; row: number }[] }));
    let numPending = 0;
    rows.forEach((req, i) => {
      if (hasGrammar(req) && req.isMaskPending) {
        byWorker[req.grammarWorker].reqs.push(req);
        byWorker[req.grammarWorker].items.push({ handle: req.grammarHandle, row: i });
        numPending++;
      } else if (hasGrammar(req) && req.allowedMask) masks.set(req.allowedMask.subarray(0, w), i * w);
      else masks.fill(0xffffffff, i * w, (i + 1) * w);
    });
    if (numPending === 0) return { masks, ready: null };
    const t0 = performance.now();
    const ready = Promise.all(
      byWorker.map(async ({ reqs, items }, k) => {
        if (items.length === 0) return;
        let steps: GrammarStep[];
        try {
          steps = await this.workers[k].fill(items, masks.buffer as SharedArrayBuffer, w);
        } catch (e) {
          for (const { row } of items) masks.fill(0xffffffff, row * w, (row + 1) * w);
          for (const r of reqs) (r.isMaskPending = false), outcomes.fail(r, e as MicroserveError);
          return;
        }
        steps.forEach((st, i) => {
          const req = reqs[i];
          req.isMaskPending = false;
          if (st.error) outcomes.fail(req, new MicroserveError(st.error.code as ErrorCode, st.error.message));
          else if (st.isComplete) (req.isGrammarComplete = true), outcomes.complete(req);
        });
      }),
    ).then(() => {
      this.stats.numFills++;
      this.stats.fillMs += performance.now() - t0;
    });
    return { masks, ready };
  }

  /**
   * A failed step's masks for its retry: each grammar row keeps its mask up front (the halves run
   * with their masks known). Waits for the step's fill first.
   */
  async keepMasks(rows: readonly (Request | null)[], step: StepMasks): Promise<void> {
    await step.ready;
    const w = this.words;
    rows.forEach((req, i) => {
      if (req && req.grammarHandle >= 0 && !req.isMaskPending) req.allowedMask = step.masks.slice(i * w, (i + 1) * w);
    });
  }

  /** Frees `req`'s matcher. */
  release(req: Request): void {
    if (req.grammarHandle >= 0 && req.grammarWorker >= 0) {
      this.workers[req.grammarWorker].close([req.grammarHandle]);
      this.load[req.grammarWorker]--;
    }
    req.grammarHandle = -1;
    req.grammarWorker = -1;
    req.allowedMask = null;
    req.isMaskPending = false;
  }

  /** Stops the workers (engine close): pending calls fail, so pending fills settle. */
  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.shutdown()));
  }

  private take(n: number): Uint32Array {
    if (this.scratch.length < n) this.scratch = new Uint32Array(new SharedArrayBuffer(4 * Math.max(n, 2 * this.scratch.length)));
    return this.scratch.subarray(0, n);
  }
}
