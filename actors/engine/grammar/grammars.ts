/**
 * Structured outputs on one engine: the grammars of its requests (owned by the engine core, like
 * the penalty slots). The matchers live in a worker thread (grammar-worker.ts), so a compile that
 * takes seconds never blocks the engine loop; each request holds a handle there. Lifecycle:
 * 1. admission (`check`, synchronous): refused at once where this engine cannot run it;
 * 2. `open`: compile (cached in the worker), make the request's matcher, replay its earlier output
 *    (migration), compute the first mask: the request joins the scheduler only then;
 * 3. after each step (`advance`): the step's sampled tokens go to the worker in one call, which
 *    accepts them and computes the masks of the next step before that step is built;
 * 4. `release` with the request (its matcher freed).
 *
 * Both backends apply the mask (`SamplingExtras.allowedMask`): the CPU in its sampler, CUDA in
 * the logit-processing kernel before the sampling kernels (native/src/cuda/logit-processing.cu).
 */
import { MicroserveError, type ErrorCode } from '../../../common/errors.ts';
import type { GrammarSpec } from '../../messages.ts';
import { GrammarSpecSchema } from '../../messages.ts';
import type { TokenizerSource } from '../../text/tokenizer.ts';
import type { Request } from '../request.ts';
import type { StepEntry } from '../scheduler.ts';
import type { GrammarStep } from './protocol.ts';
import { GrammarWorkerClient } from './worker-client.ts';

const FIELD = 'sampling.grammar';

export interface GrammarsOptions {
  /** The model's tokenizer (its vocabulary); null: the model has none (grammars refused). */
  tokenizer: TokenizerSource | null;
  vocabSize: number;
  /** Tokens that end generation (the model's EOS): allowed where the grammar is complete. */
  eosTokenIds: number[];
  /** [cacheSize=64] compiled grammars kept (LRU by spec text). */
  cacheSize?: number;
  /** [timeoutMs=60000] longest grammar call (see worker-client.ts). */
  timeoutMs?: number;
}

/** Time spent waiting for the grammar worker after forwards (the grammar's share of a step). */
export interface GrammarStats {
  numAdvances: number;
  advanceMs: number;
}

export class Grammars {
  readonly stats: GrammarStats = { numAdvances: 0, advanceMs: 0 };
  private readonly worker: GrammarWorkerClient | null;
  private nextHandle = 1;

  constructor(private readonly o: GrammarsOptions) {
    this.worker = o.tokenizer
      ? new GrammarWorkerClient({ tokenizer: o.tokenizer, vocabSize: o.vocabSize, eosTokenIds: o.eosTokenIds, cacheSize: o.cacheSize }, { timeoutMs: o.timeoutMs })
      : null;
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
    if (!this.worker) throw new MicroserveError('BAD_REQUEST', `${op}: structured outputs need the model's tokenizer, and this model has none`, { field: FIELD });
    return r.data;
  }

  /** Opens `req`'s grammar (its sampling.grammar, checked by `check`): matcher, earlier output replayed, first mask. */
  async open(req: Request): Promise<void> {
    const s = req.sampling!;
    const numPrior = s.numPriorOutput ?? 0;
    const handle = this.nextHandle++;
    const first = await this.worker!.open(handle, s.grammar!, FIELD, req.promptIds.slice(req.promptIds.length - numPrior));
    if (req.state === 'finished') return this.worker!.close([handle]);
    req.grammarHandle = handle;
    apply(req, first);
  }

  /**
   * After a forward: the rows that sampled a token for a request with a grammar feed it to their
   * matcher; the masks of the next step come back. A token outside the grammar (a backend that
   * ignored the mask) or a lost matcher fails that request through `fail`.
   */
  async advance(entries: StepEntry[], tokens: Int32Array, fail: (req: Request, err: MicroserveError) => void): Promise<void> {
    const reqs: Request[] = [];
    const items: { handle: number; token: number }[] = [];
    entries.forEach(({ req, start, n }, i) => {
      if (req.grammarHandle < 0 || req.kind !== 'generate' || start + n !== req.totalLen || req.isAborted || req.state !== 'running') return;
      reqs.push(req);
      items.push({ handle: req.grammarHandle, token: tokens[i] });
    });
    if (items.length === 0) return;
    let steps: GrammarStep[];
    const t0 = performance.now();
    try {
      steps = await this.worker!.advance(items);
    } catch (e) {
      for (const r of reqs) fail(r, e as MicroserveError);
      return;
    } finally {
      this.stats.numAdvances++;
      this.stats.advanceMs += performance.now() - t0;
    }
    steps.forEach((st, i) => {
      if (st.error) fail(reqs[i], new MicroserveError(st.error.code as ErrorCode, st.error.message));
      else apply(reqs[i], st);
    });
  }

  /** Frees `req`'s matcher. */
  release(req: Request): void {
    if (req.grammarHandle >= 0) this.worker?.close([req.grammarHandle]);
    req.grammarHandle = -1;
    req.allowedMask = null;
  }

  /** Stops the worker (engine close). */
  close(): Promise<void> {
    return this.worker?.shutdown() ?? Promise.resolve();
  }
}

function apply(req: Request, st: GrammarStep): void {
  req.isGrammarComplete = st.isComplete;
  if (st.mask) req.allowedMask = st.mask;
}
