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
import type { FinishReason, TokenLogprob, TokensMsg } from '../messages.ts';
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
  /** A request is gone for good: free what other owners keep for it (its grammar). */
  onRelease(req: Request): void;
}

export class RequestTable {
  /** Live requests by key. */
  readonly byKey = new Map<string, Request>();
  /** Penalty-state slots of the backend, one per live request that uses penalties (freed by `release`). */
  readonly samplingSlots = new SamplingSlots();
  /** Requests of the forward in flight (null between steps). */
  private inFlight: Set<Request> | null = null;
  /** Settles when the forward in flight returns. */
  private stepEnd: Promise<void> | null = null;
  private endStepNow: (() => void) | null = null;

  constructor(private readonly o: RequestTableOptions) {}

  get size(): number {
    return this.byKey.size;
  }

  /** Marks `reqs` as the forward in flight until `endStep`. */
  beginStep(reqs: Request[]): void {
    this.inFlight = new Set(reqs);
    this.stepEnd = new Promise<void>((r) => (this.endStepNow = r));
  }

  endStep(): void {
    this.inFlight = null;
    this.endStepNow?.();
    this.endStepNow = null;
  }

  /** Resolves once `req` is not part of the forward in flight (its writes have landed). */
  async afterStep(req: Request): Promise<void> {
    while (this.inFlight?.has(req) && this.stepEnd) await this.stepEnd;
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
    if (this.inFlight?.has(req)) {
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

  /** Streams `tokens` of `req` (with their `logprobs`, when asked for) to its replyTo (with `finish` as the last message). */
  emit(req: Request, tokens: number[], finish?: FinishReason, error?: MicroserveError, logprobs?: TokenLogprob[]): void {
    const msg: TokensMsg = { type: 'tokens', id: req.id, engine: this.o.engine, tokens };
    if (logprobs) msg.logprobs = logprobs;
    if (finish) msg.finish = finish;
    if (error) msg.error = error.toWire();
    try {
      this.o.sink(req.replyTo ?? '', msg);
    } catch (e) {
      log.warn('token sink threw', { engine: this.o.engine, id: req.id, err: e as Error });
    }
  }
}
