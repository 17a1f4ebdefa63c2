/**
 * Structured outputs on one engine: the grammars of its requests (owned by the engine core, like
 * the penalty slots). The matchers live in worker threads (grammar-worker.ts), so a compile that
 * takes seconds never blocks the engine loop; each request holds a handle in one of them (the
 * least loaded when it opened). Lifecycle:
 * 1. admission (`check`, synchronous): refused at once where this engine cannot run it;
 * 2. `open`: compile (cached per worker), make the request's matcher, replay its earlier output
 *    (migration), compute the first mask: the request joins the scheduler only then;
 * 3. after each step, `accept`: each sampled token is staged for its matcher (no mask: cheap); the
 *    engine applies the token meanwhile but streams it only once the matcher answered
 *    (postprocess.ts `settle`): an out-of-grammar token, a grammar that terminated, and, for a
 *    request that ends at this token unless its grammar completes, completion;
 * 4. the next step is submitted with its grammar rows gated (`prepare`): each worker takes the
 *    staged tokens and then writes the rows' masks into one shared matrix, in one call, while the
 *    forward runs (`dispatch` sends the tokens of workers with no row in that step), and the step
 *    runner hands the matrix to the backend's mask gate (native/backend.ts ForwardSampling.maskGate),
 *    which waits for it between the logits and the sampling. A grammar found complete or failed
 *    there (by the accept or at mask time) ends its request at once; its row's token is discarded;
 * 5. `release` with the request (its matcher freed).
 *
 * Both backends apply the mask (`SamplingExtras.allowedMask`): the CPU in its sampler, CUDA in
 * the logit-processing kernel before the sampling kernels (native/src/cuda/logit-processing.cu).
 */
import { availableParallelism } from 'node:os';
import { MicroserveError, type ErrorCode } from '../../../common/errors.ts';
import { log } from '../../../common/log.ts';
import type { GrammarSpec } from '../../messages.ts';
import { GrammarSpecSchema } from '../../messages.ts';
import type { TokenizerSource } from '../../text/tokenizer.ts';
import type { Request } from '../request.ts';
import type { AcceptItem, GrammarStep } from './protocol.ts';
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
  /** Steps whose sampled tokens went to the matchers, and the loop's wait for them (exposed: before applying the next step's tokens). */
  numAccepts: number;
  acceptMs: number;
  /** Of those, how many went to a worker with the next step's fill (so after that step was submitted), and the accepts' wall time from staging to the last answer (hidden under the next forward). */
  numAcceptsWithFill: number;
  acceptCallMs: number;
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

/** A grammar row's sampled token for `accept`; `isLast`: the request ends at it unless its grammar completes (so completion is decided now). */
export interface GrammarToken {
  req: Request;
  token: number;
  isLast: boolean;
}

/** What the matcher said of a token: outside the grammar or matcher lost (`error`), or complete (the request ends with `stop`). */
export interface AcceptOutcome {
  isComplete: boolean;
  error?: MicroserveError;
}

/** One `accept` until every outcome settled: worker calls left, and its waiters. */
interface Acceptance {
  numCalls: number;
  isWithFill: boolean;
  done: Promise<void>;
  resolve: () => void;
  t0: number;
}

/** One worker's share of an `accept`. */
interface StagedAccept {
  tokens: GrammarToken[];
  /** The tokens for the worker (handles taken when staged). */
  items: AcceptItem[];
  settle(token: GrammarToken, outcome: AcceptOutcome): void;
  of: Acceptance;
  isSettled: boolean;
}

/** What a fill tells the engine: a request whose grammar completed (ends with `stop`), or failed. */
export interface GrammarOutcomes {
  complete(req: Request): void;
  fail(req: Request, err: MicroserveError): void;
}

export class Grammars {
  readonly stats: GrammarStats = { numAccepts: 0, acceptMs: 0, numAcceptsWithFill: 0, acceptCallMs: 0, numFills: 0, fillMs: 0 };
  /** Mask words per row. */
  readonly words: number;
  private readonly workers: GrammarWorkerClient[];
  /** Live matchers per worker (where the next request's goes). */
  private readonly load: number[];
  private nextHandle = 1;
  /** Per worker: tokens staged by `accept`, sent with the next fill or by `dispatch`. */
  private readonly staged: (StagedAccept | null)[];
  /** The last `accept` until every outcome settled (null: none out). */
  private acceptance: Acceptance | null = null;
  /** The step mask matrix, reused step after step (a step's forward settles before the next is built). */
  private scratch = new Uint32Array(new SharedArrayBuffer(0));

  constructor(private readonly o: GrammarsOptions) {
    this.words = Math.ceil(o.vocabSize / 32);
    const n = o.numWorkers ?? defaultGrammarWorkers();
    if (!Number.isInteger(n) || n < 1 || n > 64) throw new MicroserveError('BAD_CONFIG', `grammarWorkers must be an integer in [1, 64] (got ${n})`, { field: 'grammarWorkers' });
    const init = { tokenizer: o.tokenizer, vocabSize: o.vocabSize, eosTokenIds: o.eosTokenIds, cacheSize: o.cacheSize };
    this.workers = o.tokenizer ? Array.from({ length: n }, () => new GrammarWorkerClient(init, { timeoutMs: o.timeoutMs })) : [];
    this.load = this.workers.map(() => 0);
    this.staged = this.workers.map(() => null);
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
   * After a forward: the rows that sampled a token for a request with a grammar (`tokens`, their
   * requests still running) stage it for their matcher, and their next masks become pending. Nothing
   * is sent yet: each worker's tokens go with the next step's fill (`prepare`), in one call that
   * takes the tokens before computing the masks, or alone by `dispatch`; the caller submits the
   * next step in between, so the accept runs while that step's forward does. Each token's outcome
   * goes to `settle` as soon as its worker answers, before that worker's fill outcomes (`prepare`'s
   * `outcomes`), and never after the caller's next `whenAccepted` resolves: out of the grammar (a
   * backend that ignored the mask, or a lost matcher: `error`), or complete (the matcher terminated,
   * or completed at the request's last token, `isLast`).
   */
  accept<T extends GrammarToken>(tokens: readonly T[], settle: (token: T, outcome: AcceptOutcome) => void): void {
    if (tokens.length === 0) return;
    if (this.acceptance) throw new Error('Grammars.accept: the previous step\'s outcomes have not all settled (await whenAccepted first)');
    let resolve!: () => void;
    const done = new Promise<void>((r) => (resolve = r));
    const of: Acceptance = { numCalls: 0, isWithFill: false, done, resolve, t0: performance.now() };
    for (const t of tokens) {
      const k = t.req.grammarWorker;
      let a = this.staged[k];
      if (!a) (a = this.staged[k] = { tokens: [], items: [], settle: settle as StagedAccept['settle'], of, isSettled: false }), of.numCalls++;
      a.tokens.push(t);
      a.items.push({ handle: t.req.grammarHandle, token: t.token, isLast: t.isLast });
      t.req.allowedMask = null;
      t.req.isMaskPending = true;
    }
    this.acceptance = of;
    this.stats.numAccepts++;
  }

  /** Sends the staged tokens of workers that the last `prepare` had no fill for (call after submitting the next step). */
  dispatch(): void {
    this.staged.forEach((a, k) => {
      if (!a) return;
      this.staged[k] = null;
      this.workers[k].accept(a.items).then(
        (steps) => this.settleAccepts(a, steps),
        (e) => this.settleAccepts(a, e as MicroserveError),
      );
    });
  }

  /** An accept is staged or in the workers (its outcomes not all settled). */
  get isAccepting(): boolean {
    return this.acceptance !== null;
  }

  /** Resolves when the last `accept`'s outcomes have all settled (never rejects); the wait is the loop's, counted in stats.acceptMs. */
  async whenAccepted(): Promise<void> {
    if (!this.acceptance) return;
    const t0 = performance.now();
    await this.acceptance.done;
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
        const a = this.staged[k];
        this.staged[k] = null;
        if (a) a.of.isWithFill = true;
        const buf = masks.buffer as SharedArrayBuffer;
        let steps: GrammarStep[];
        try {
          // the tokens' outcomes come first, before the masks are computed (their tokens are streamed meanwhile)
          if (a) steps = await this.workers[k].acceptAndFill(a.items, items, buf, w, (accepted) => this.settleAccepts(a, accepted));
          else steps = await this.workers[k].fill(items, buf, w);
        } catch (e) {
          if (a) this.settleAccepts(a, e as MicroserveError);
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

  /** A worker's answer to staged tokens (its steps, or the error that failed the call), once: each to `settle`; the last one resolves the acceptance. */
  private settleAccepts(a: StagedAccept, answer: GrammarStep[] | MicroserveError): void {
    if (a.isSettled) return; // a call that failed after its partial reply
    a.isSettled = true;
    a.tokens.forEach((t, i) => {
      const st = Array.isArray(answer) ? answer[i] : null;
      const outcome: AcceptOutcome = !st
        ? { isComplete: false, error: answer as MicroserveError }
        : st.error
          ? { isComplete: false, error: new MicroserveError(st.error.code as ErrorCode, st.error.message) }
          : { isComplete: st.isComplete };
      if (st && !st.error) t.req.isGrammarComplete = st.isComplete;
      try {
        a.settle(t, outcome);
      } catch (e) {
        log.error('settling a grammar token failed', { id: t.req.id, err: e as Error }); // a bug: the loop must not wait forever for it
      }
    });
    const acc = a.of;
    if (--acc.numCalls > 0) return;
    if (this.acceptance === acc) this.acceptance = null;
    this.stats.acceptCallMs += performance.now() - acc.t0;
    if (acc.isWithFill) this.stats.numAcceptsWithFill++;
    acc.resolve();
  }

  private take(n: number): Uint32Array {
    if (this.scratch.length < n) this.scratch = new Uint32Array(new SharedArrayBuffer(4 * Math.max(n, 2 * this.scratch.length)));
    return this.scratch.subarray(0, n);
  }
}
