/**
 * The request lifecycle of one engine: the table of live requests (generate by id, send by
 * `send:<id>`), the set in the forward in flight, and every way a request ends. Owned by the
 * engine core.
 *
 * Invariant: a request's pages go back (`release`) only when no forward in flight still uses
 * them; a request released during a step is released again by the step's end.
 */
import type { MicroserveError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import type { KvCacheManager } from '../kvcache/manager.ts';
import type { FinishReason, TokenLogprob, TokensItem } from '../messages.ts';
import type { Request } from './request.ts';
import { SamplingSlots } from './sampling-params.ts';
import type { Scheduler } from './scheduler.ts';
import type { TokenSink } from './types.ts';

export interface RequestTableOptions {
  engine: string;
  kv: KvCacheManager;
  scheduler: Scheduler;
  sink: TokenSink;
  /** Pages went back or work was added: the engine loop may run. */
  kick(): void;
  /** [numSamplingSlots=Infinity] penalty-state slots of the backend (its plan's maxNumSeqs). */
  numSamplingSlots?: number;
  /** A request is gone for good: free what other owners keep for it (its grammar). */
  onRelease(req: Request): void;
}

export class RequestTable {
  /** Live requests by key. */
  readonly byKey = new Map<string, Request>();
  /** Penalty-state slots of the backend, one per live request that uses penalties (freed by `release`). */
  readonly samplingSlots: SamplingSlots;
  /** Requests of the forward in flight (empty between steps; one set, refilled each step). */
  private readonly inFlight = new Set<Request>();
  /** Settles when the forward in flight returns. */
  private stepEnd: Promise<void> | null = null;
  private endStepNow: (() => void) | null = null;
  /** Token items not handed to the sink yet, by destination, in order. */
  private outbox = new Map<string, TokensItem[]>();
  private isFlushQueued = false;

  constructor(private readonly o: RequestTableOptions) {
    this.samplingSlots = new SamplingSlots(o.numSamplingSlots);
  }

  get size(): number {
    return this.byKey.size;
  }

  /** Marks the requests of `entries` as the forward in flight until `endStep`. */
  beginStep(entries: readonly { req: Request }[]): void {
    this.inFlight.clear();
    for (const e of entries) this.inFlight.add(e.req);
  }

  endStep(): void {
    this.inFlight.clear();
    this.endStepNow?.();
    this.endStepNow = null;
    this.stepEnd = null;
  }

  /** Resolves once `req` is not part of the forward in flight (its writes have landed). */
  async afterStep(req: Request): Promise<void> {
    while (this.inFlight.has(req)) {
      this.stepEnd ??= new Promise<void>((r) => (this.endStepNow = r));
      await this.stepEnd;
    }
  }

  add(req: Request): void {
    this.byKey.set(req.key, req);
  }

  /** Ends a generate request: stream `tokens` with `reason`, give its pages back. */
  stopGenerate(req: Request, reason: FinishReason, tokens: number[] = [], error?: MicroserveError, logprobs?: TokenLogprob[]): void {
    if (req.state === 'finished') return;
    req.state = 'finished';
    req.finishReason = reason;
    this.release(req, reason === 'stop' || reason === 'length');
    this.emit(req, tokens, reason, error, logprobs);
  }

  /**
   * A request that ends at its last token once its grammar said how (postprocess.ts `settle`):
   * out of the scheduler (not in the next step), its pages kept until it ends.
   */
  hold(req: Request): void {
    this.o.scheduler.remove(req);
  }

  /** Fails a send request: stops its compute or its transfer. */
  stopSend(req: Request, err: MicroserveError): void {
    if (req.state === 'finished') return;
    req.isAborted = true;
    req.failure ??= err;
    req.rejectComputed(err);
    req.rejectStopped(err);
    if (req.state === 'computed') return; // the transfer notices, and remote_send releases the pages
    req.state = 'finished';
    this.release(req, false);
  }

  /** A send request has [0, end) computed: it leaves the scheduler; remote_send transfers it. */
  sendComputed(req: Request): void {
    this.o.scheduler.remove(req);
    req.state = 'computed';
    req.resolveComputed();
  }

  /** Gives a request's pages back (later, if its forward is in flight) and forgets it. */
  release(req: Request, cache: boolean): void {
    this.o.scheduler.remove(req);
    if (this.inFlight.has(req)) {
      req.isAborted = req.isAborted || !cache;
      return; // the step's end releases it
    }
    this.samplingSlots.release(req);
    this.o.onRelease(req);
    if (req.seq) {
      this.o.kv.closeSeq(req.seq, cache ? { tokens: req.tokens(), numValid: req.numComputed } : undefined);
      req.seq = null;
    }
    if (this.byKey.get(req.key) === req) this.byKey.delete(req.key);
    this.o.kick();
  }

  /**
   * Queues `tokens` of `req` (with their `logprobs`, when asked for) for its replyTo (with `finish`
   * as its last item). The engine loop hands the queue to the sink after each step (`flush`); an
   * item queued outside the loop goes at the end of the current task.
   */
  emit(req: Request, tokens: number[], finish?: FinishReason, error?: MicroserveError, logprobs?: TokenLogprob[]): void {
    const item: TokensItem = { id: req.id, tokens };
    if (logprobs) item.logprobs = logprobs;
    const pl = req.promptLogprobs;
    if (pl?.isComplete && !pl.isSent) {  // once, with the first item after the prompt is computed
      item.promptLogprobs = pl.list();
      pl.isSent = true;
    }
    if (finish) item.finish = finish;
    if (error) item.error = error.toWire();
    const replyTo = req.replyTo ?? '';
    const items = this.outbox.get(replyTo);
    if (items) items.push(item);
    else this.outbox.set(replyTo, [item]);
    if (!this.isFlushQueued) {
      this.isFlushQueued = true;
      queueMicrotask(() => {
        this.isFlushQueued = false;
        this.flush();
      });
    }
  }

  /** Hands every queued item to the sink: one call per destination, items in order. */
  flush(): void {
    if (this.outbox.size === 0) return;
    const box = this.outbox;
    this.outbox = new Map();
    for (const [replyTo, items] of box) {
      try {
        this.o.sink(replyTo, items);
      } catch (e) {
        log.warn('token sink threw', { engine: this.o.engine, replyTo, err: e as Error });
      }
    }
  }
}
