/**
 * EngineCore: one model, one KV pool, the continuous-batching loop, and every engine operation.
 * Used directly by `microserve generate` and tests; `actor.ts` wraps it as `engine/<name>`.
 *
 * The loop runs while there is work, off the actor mailbox: schedule a step (scheduler.ts), run
 * one native `forward` (the only one in flight), then per sequence: advance `numComputed`, and
 * where a chunk reached the last token, sample, stream the token, and finish when due. Finished
 * requests put their prompt + output pages into the prefix cache. Operations called meanwhile
 * (status, prep_recv, abort, ...) run between steps, synchronously, on the event loop.
 *
 * The microserving operations (prep_recv, kv_write, remote_send) live in microserving.ts.
 */
import type { Backend, ForwardBatch, ForwardSampling, LayerSendSpec, MemoryPlan } from '../../native/backend.ts';
import { MicroserveError, isMicroserveError } from '../../common/errors.ts';
import { KvCacheManager } from '../kvcache/manager.ts';
import { log } from '../../common/log.ts';
import type {
  EngineCounters,
  EngineStatus,
  FinishReason,
  GenerateMsg,
  KvWriteMsg,
  PrepRecvMsg,
  PrepRecvResult,
  RemoteSendMsg,
  RemoteSendResult,
  Role,
  StartGenerateMsg,
  TokensMsg,
} from '../messages.ts';
import { Request, type PushPlan } from './request.ts';
import { ReservationTable } from './reservations.ts';
import { samplingFor } from './sampler.ts';
import { Scheduler, type SchedulerLimits, type StepEntry } from './scheduler.ts';
import type { EngineCoreOptions } from './types.ts';
import { DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_NUM_SEQS, newCounters } from './types.ts';
import { checkFits, checkId, checkInt, checkSampling, checkTokens, type Capacity } from './validate.ts';
import { kvWrite, prepRecv, remoteSend, startFromReservation } from './microserving.ts';

const ROLES: Role[] = ['prefill', 'decode', 'both'];

/** Entries of one forward: `tokens` when it ran, else the error that failed them. */
interface StepPart {
  entries: StepEntry[];
  tokens: Int32Array | null;
  error?: MicroserveError;
}

/** The backend's memory plan; undefined for a backend that has none (test doubles). */
function planOf(b: Backend): MemoryPlan | undefined {
  try {
    return b.plan ? { ...b.plan } : undefined;
  } catch {
    return undefined;
  }
}

export class EngineCore {
  readonly name: string;
  readonly model: string;
  role: Role;
  readonly backend: Backend;
  readonly kv: KvCacheManager;
  readonly counters: EngineCounters = newCounters();
  readonly capacity: Capacity;
  /** Per-step limits the scheduler keeps (shown by status). */
  readonly limits: SchedulerLimits;
  /** @internal */ readonly opts: EngineCoreOptions;
  /** @internal */ readonly scheduler: Scheduler;
  /** @internal */ readonly reservations: ReservationTable;
  /** @internal requests by key (generate: id; send: `send:<id>`) */
  readonly requests = new Map<string, Request>();
  /** @internal requests of the forward in flight */
  inFlight: Set<Request> | null = null;
  /** Message of the last failed idle integrity check (null: all checks passed). */
  integrityError: string | null = null;
  /** Settles when the forward in flight returns. */
  private stepEnd: Promise<void> | null = null;
  private isLooping = false;
  private isClosed = false;
  private idleWaiters: (() => void)[] = [];
  /** Test hook (`failNextSteps`): forwards left to fail on purpose. */
  private numStepsToFail = 0;

  constructor(opts: EngineCoreOptions) {
    this.opts = opts;
    this.name = opts.name;
    this.model = opts.model ?? opts.name;
    this.role = opts.role ?? 'both';
    this.backend = opts.backend;
    const maxBatchTokens = opts.maxBatchTokens ?? DEFAULT_MAX_BATCH_TOKENS;
    if (!Number.isInteger(maxBatchTokens) || maxBatchTokens < 1) throw new TypeError(`maxBatchTokens must be a positive integer, got ${maxBatchTokens}`);
    const maxNumSeqs = opts.maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS;
    if (!Number.isInteger(maxNumSeqs) || maxNumSeqs < 1) throw new TypeError(`maxNumSeqs must be a positive integer, got ${maxNumSeqs}`);
    this.limits = { maxBatchTokens, maxNumSeqs };
    this.kv = new KvCacheManager({ numPages: opts.backend.numPages, pageSize: opts.backend.pageSize });
    this.capacity = { maxPositions: opts.backend.config.maxPositions, numPages: this.kv.numPages, pageSize: this.kv.pageSize };
    this.scheduler = new Scheduler(this.kv, this.limits, {
      onAdmit: (req, matchedLen) => {
        if (req.numCachedOnAdmit < 0) req.numCachedOnAdmit = matchedLen;
        this.counters.prefixHitTokens += matchedLen;
      },
      onPreempt: (req) => {
        this.counters.preemptions++;
        log.debug('preempted', { engine: this.name, id: req.id, computed: req.totalLen });
      },
    });
    this.reservations = new ReservationTable(this.kv, () => this.kick());
  }

  /** Data parallel: start_generate with begin 0. */
  generate(msg: Omit<GenerateMsg, 'type'>): void {
    this.startGenerate({ ...msg, begin: 0 }, 'generate');
  }

  /**
   * Admits a request; tokens go to the sink. With a prep_recv reservation for `id`, its pages
   * hold [0, begin) and only [begin, len) is prefilled here; `begin == len` is taken as len - 1
   * (the last prompt token is recomputed: its logits are needed). Without one, whatever the
   * prefix cache lacks is computed (begin is then only a hint). Throws typed errors at once.
   */
  startGenerate(msg: Omit<StartGenerateMsg, 'type'>, op = 'start_generate'): void {
    this.assertOpen();
    const id = checkId(msg.id, op);
    const promptIds = checkTokens(msg.promptIds, this.backend.config.vocabSize, op);
    const sampling = checkSampling(msg.sampling, op);
    const begin = checkInt(msg.begin ?? 0, op, 'begin', 0, promptIds.length);
    if (typeof msg.replyTo !== 'string') throw new MicroserveError('BAD_REQUEST', `${op}: replyTo must be an actor path`, { field: 'replyTo' });
    if (this.requests.has(id)) throw new MicroserveError('DUPLICATE_REQUEST', `${op}: request '${id}' already exists on ${this.name}`);
    checkFits(promptIds.length, sampling.maxTokens, this.capacity, op);
    const reservation = this.reservations.get(id);
    if (!reservation && this.reservations.isExpired(id)) throw new MicroserveError('RESERVATION_EXPIRED', `${op}: the reservation for '${id}' expired`);
    if (!reservation && this.kv.getSeq(id)) throw new MicroserveError('DUPLICATE_REQUEST', `${op}: '${id}' still holds pages on ${this.name} (a released reservation finishing a write)`);
    const req = new Request({ id, kind: 'generate', promptIds, sampling, replyTo: msg.replyTo });
    if (reservation) startFromReservation(this, req, reservation, begin);
    else this.scheduler.enqueue(req);
    this.counters.requests++;
    this.requests.set(id, req);
    if (sampling.maxTokens === 0) {
      this.stopGenerate(req, 'length');
      return;
    }
    this.kick();
  }

  /** prep_recv: reserve pages for [matched, end); see microserving.ts. */
  prepRecv(msg: Omit<PrepRecvMsg, 'type'>): PrepRecvResult {
    return prepRecv(this, msg);
  }

  /** kv_write: page bytes into a live reservation's pages (host transport receiver). */
  kvWrite(msg: Omit<KvWriteMsg, 'type'>): Promise<{ ok: true }> {
    return kvWrite(this, msg);
  }

  /** remote_send: compute what this engine lacks of [0, end), write [begin, end) to kvAddr. */
  remoteSend(msg: Omit<RemoteSendMsg, 'type'>): Promise<RemoteSendResult> {
    return remoteSend(this, msg);
  }

  /** Aborts request `id` at any stage (queued, running, sending, reserved). */
  abort(id: string): { aborted: boolean } {
    let found = false;
    const gen = this.requests.get(id);
    if (gen) {
      found = true;
      this.stopGenerate(gen, 'abort');
    }
    const send = this.requests.get(`send:${id}`);
    if (send) {
      found = true;
      this.stopSend(send, new MicroserveError('ABORTED', `request '${id}' was aborted`));
    }
    if (this.reservations.release(id)) found = true;
    if (found) this.counters.aborts++;
    return { aborted: found };
  }

  matchPrefix(promptIds: number[]): { matchedLen: number } {
    const ids = checkTokens(promptIds, this.backend.config.vocabSize, 'match_prefix');
    return { matchedLen: this.kv.match(ids).matchedLen };
  }

  /** Drops every unreferenced cached prefix. Reply: `{ evictedPages }`. */
  flushCache(): { evictedPages: number } {
    return { evictedPages: this.kv.flush() };
  }

  /**
   * TEST ONLY: the next `count` forwards throw (as a failing backend would) instead of running,
   * to exercise step-failure isolation. Reachable only as the `test_fail_steps` message of an
   * engine started with `testHooks` (never from the HTTP API). Reply: `{ numStepsToFail }`.
   */
  failNextSteps(count: number): { numStepsToFail: number } {
    if (!this.opts.testHooks) throw new MicroserveError('BAD_MESSAGE', `test_fail_steps: engine ${this.name} was not started with test hooks`);
    this.numStepsToFail = checkInt(count, 'test_fail_steps', 'count', 0, 1_000_000);
    return { numStepsToFail: this.numStepsToFail };
  }

  setRole(role: Role): { role: Role } {
    if (!ROLES.includes(role)) throw new MicroserveError('BAD_REQUEST', `set_role: role must be one of ${ROLES.join(', ')}`, { field: 'role' });
    this.role = role;
    return { role };
  }

  status(): EngineStatus {
    let numRunning = 0;
    for (const r of this.requests.values()) if (r.state === 'running' || r.state === 'computed') numRunning++;
    return {
      name: this.name,
      role: this.role,
      device: this.backend.device,
      native: this.backend.nativeStatus,
      pid: process.pid,
      model: this.model,
      numRunning,
      numWaiting: this.scheduler.waiting.length,
      numReserved: this.reservations.size,
      kv: this.kv.stats(),
      pageSize: this.kv.pageSize,
      maxNumSeqs: this.limits.maxNumSeqs,
      maxBatchTokens: this.limits.maxBatchTokens,
      counters: structuredClone(this.counters),
      ...(planOf(this.backend) ? { plan: planOf(this.backend) } : {}),
    };
  }

  /** Resolves when no request is queued, running or sending (the integrity check has run). */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Aborts everything and refuses new work; the backend is the owner's to close. */
  close(): void {
    if (this.isClosed) return;
    for (const r of [...this.requests.values()]) this.abort(r.id);
    this.reservations.releaseAll();
    this.isClosed = true;
  }

  // --- internals used by microserving.ts -------------------------------------------------------

  /** @internal Starts the loop (after the current call returns) if it is not running and there is work. */
  kick(): void {
    if (this.isLooping) return;
    if (this.isClosed || this.scheduler.isEmpty) {
      this.settleIdle();
      return;
    }
    this.isLooping = true;
    queueMicrotask(() => void this.loop());
  }

  /** @internal Ends a generate request: stream `tokens` with `reason`, give its pages back. */
  stopGenerate(req: Request, reason: FinishReason, tokens: number[] = [], error?: MicroserveError): void {
    if (req.state === 'finished') return;
    req.state = 'finished';
    req.finishReason = reason;
    const cache = reason === 'stop' || reason === 'length';
    this.release(req, cache);
    this.emit(req, tokens, reason, error);
  }

  /** @internal Fails a send request: stops its compute or its transfer. */
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

  /** @internal Gives a request's pages back (later, if its forward is in flight) and forgets it. */
  release(req: Request, cache: boolean): void {
    this.scheduler.remove(req);
    if (this.inFlight?.has(req)) {
      req.isAborted = req.isAborted || !cache;
      return; // the step's end releases it
    }
    if (req.seq) {
      this.kv.closeSeq(req.seq, cache ? { tokens: req.tokens(), numValid: req.numComputed } : undefined);
      req.seq = null;
    }
    if (this.requests.get(req.key) === req) this.requests.delete(req.key);
    this.kick();
  }

  // --- the loop ---------------------------------------------------------------------------------

  private async loop(): Promise<void> {
    try {
      while (!this.isClosed && !this.scheduler.isEmpty) {
        const numPreempted = this.scheduler.numPreempted;
        const plan = this.scheduler.schedule();
        for (const req of plan.ready) this.sendComputed(req);
        if (plan.entries.length === 0) {
          if (plan.ready.length > 0 || this.scheduler.numPreempted !== numPreempted) continue;
          break; // short of pages: a release kicks the loop again
        }
        await this.step(plan.entries);
      }
    } catch (e) {
      log.error('engine loop failed', { engine: this.name, err: e as Error });
    } finally {
      this.isLooping = false;
      this.settleIdle();
    }
  }

  /** One step: run the forward (isolating a failure, see `forwardIsolated`), then postprocess. */
  private async step(entries: StepEntry[]): Promise<void> {
    this.inFlight = new Set(entries.map((e) => e.req));
    let endStep!: () => void;
    this.stepEnd = new Promise<void>((r) => (endStep = r));
    let parts: StepPart[];
    try {
      parts = await this.forwardIsolated(entries);
    } finally {
      this.inFlight = null;
      endStep();
    }
    for (const p of parts) {
      if (p.tokens) this.postprocess(p.entries, p.tokens);
      else this.failEntries(p.entries, p.error!);
    }
  }

  /**
   * Step-failure policy. A forward that throws (the backend's error, e.g. a device allocation or
   * launch failure) is not an engine death and does not touch requests outside the step: the
   * step runs once more split in two halves, each its own forward (a failure that depends on
   * the step's size gets through at half of it; sampling is per sequence, so tokens are the
   * same). A half that fails again fails only its own requests, with STEP_FAILED naming the
   * step's shape and the backend's error; a step of one sequence fails at once. The router
   * treats STEP_FAILED as final for the request (no migration, no retry loop).
   */
  private async forwardIsolated(entries: StepEntry[]): Promise<StepPart[]> {
    try {
      return [{ entries, tokens: await this.forward(entries) }];
    } catch (e) {
      const err = this.stepFailed(entries, e);
      if (entries.length < 2) return [{ entries, tokens: null, error: err }];
      this.counters.stepRetries++;
      const mid = Math.ceil(entries.length / 2);
      const parts: StepPart[] = [];
      for (const half of [entries.slice(0, mid), entries.slice(mid)]) {
        try {
          parts.push({ entries: half, tokens: await this.forward(half) });
        } catch (e2) {
          parts.push({ entries: half, tokens: null, error: this.stepFailed(half, e2, err) });
        }
      }
      return parts;
    }
  }

  /**
   * Counts a failed forward and builds its STEP_FAILED error: the step's shape and the backend's
   * error, and for a failed half of a retry, the shape and error of the step it came from.
   */
  private stepFailed(entries: StepEntry[], e: unknown, whole?: MicroserveError): MicroserveError {
    this.counters.stepFailures++;
    const numTokens = entries.reduce((a, x) => a + x.n, 0);
    const backendCode = isMicroserveError(e) ? e.code : 'NATIVE_ERROR';
    const backendMessage = (e as Error)?.message ?? String(e);
    const shape = `${entries.length} sequences / ${numTokens} tokens`;
    const message = whole
      ? `${whole.message}; retried split in two, its half of ${shape} failed again: ${backendCode}: ${backendMessage}`
      : `engine ${this.name}: a step of ${shape} failed: ${backendCode}: ${backendMessage}`;
    log.error('step failed', { engine: this.name, numSeqs: entries.length, numTokens, isRetry: !!whole, backendCode, err: e as Error });
    return new MicroserveError('STEP_FAILED', message, { numSeqs: entries.length, numTokens, backendCode, backendMessage });
  }

  /** The requests of a failed forward: aborted ones give their pages back, the others end with `err`. */
  private failEntries(entries: StepEntry[], err: MicroserveError): void {
    for (const { req } of entries) {
      this.counters.requestsFailedByStep++;
      if (req.isAborted || req.state !== 'running') this.release(req, false);
      else if (req.kind === 'send') this.stopSend(req, err);
      else this.stopGenerate(req, 'error', [], err);
    }
  }

  /** One native forward of `entries`; tokens sampled on the device (numSeqs ids, no logits). */
  private async forward(entries: StepEntry[]): Promise<Int32Array> {
    if (this.numStepsToFail > 0) {
      this.numStepsToFail--;
      throw new MicroserveError('NATIVE_ERROR', 'forced step failure (test hook)');
    }
    const batch: ForwardBatch & { sampling: ForwardSampling } = {
      seqs: entries.map((e) => ({ tokens: e.req.slice(e.start, e.n), startPos: e.start, pageTable: Int32Array.from(e.req.seq!.pageIds) })),
      logits: 'last',
      sampling: samplingFor(entries),
    };
    // Sends over a GPU push transport write their pages into the receiver layer by layer.
    const { send, pushed } = this.layerSend(entries);
    if (!send) return this.backend.forwardTokens(batch);
    const r = await this.backend.kvIpc!.forwardWithSend(batch, send);
    for (const [plan, i] of pushed) plan.pushed.add(i);
    const lp = this.counters.layerPush!;
    lp.forwards++;
    lp.computeMs += r.timeline.computeEnd;
    lp.exposedMs += Math.max(0, r.timeline.sendEnd - r.timeline.computeEnd);
    return r.tokens!;
  }

  /** Advances each request of a successful forward; samples, streams and finishes where due. */
  private postprocess(entries: StepEntry[], tokens: Int32Array): void {
    entries.forEach(({ req, start, n }, i) => {
      if (req.isAborted || req.state !== 'running') {
        this.release(req, !req.isAborted);
        return;
      }
      // positions below the request's high-water mark were computed before a preemption
      const numRecomputed = Math.max(0, Math.min(start + n, req.numComputedPeak) - start);
      this.counters.tokensRecomputed += numRecomputed;
      req.numComputed += n;
      req.numComputedPeak = Math.max(req.numComputedPeak, req.numComputed);
      const numPrefill = req.prefillTokensOf(start, n);
      req.numPrefilled += numPrefill;
      this.counters.tokensPrefilled += numPrefill;
      if (req.numRemaining > 0) return;
      if (req.kind === 'send') {
        this.sendComputed(req);
        return;
      }
      const s = req.sampling!;
      const tok = tokens[i];
      req.outputIds.push(tok);
      this.counters.tokensGenerated++;
      let finish: FinishReason | null = null;
      if (s.stopTokenIds.includes(tok)) finish = 'stop';
      else if (req.outputIds.length >= s.maxTokens || req.totalLen >= this.capacity.maxPositions) finish = 'length';
      if (finish) this.stopGenerate(req, finish, [tok]);
      else this.emit(req, [tok]);
    });
  }

  /**
   * The pages this step's send requests push (PushPlan): every page of [first, last) that a
   * chunk touches, whole per layer (a page a later chunk completes is written again then), and
   * which plan index each is, to mark once the forward succeeded.
   */
  private layerSend(entries: StepEntry[]): { send: LayerSendSpec | null; pushed: [PushPlan, number][] } {
    const src: number[] = [];
    const dst: number[] = [];
    const peers: number[] = [];
    const pushed: [PushPlan, number][] = [];
    const ps = this.kv.pageSize;
    for (const { req, start, n } of entries) {
      const p = req.push;
      if (!p || !req.seq) continue;
      const lo = Math.max(p.first, Math.floor(start / ps));
      const hi = Math.min(p.last, Math.ceil((start + n) / ps));
      for (let i = lo; i < hi; i++) {
        src.push(req.seq.pageIds[i]);
        dst.push(p.dstPageIds[i]);
        peers.push(p.peerId);
        pushed.push([p, i]);
      }
    }
    if (src.length === 0) return { send: null, pushed };
    return { send: { peerId: peers[0], srcPages: Int32Array.from(src), dstPages: Int32Array.from(dst), peerIds: Int32Array.from(peers) }, pushed };
  }

  /** @internal Resolves once `req` is not part of the forward in flight (its writes have landed). */
  async afterStep(req: Request): Promise<void> {
    while (this.inFlight?.has(req) && this.stepEnd) await this.stepEnd;
  }

  /** A send request has [0, end) computed: it leaves the scheduler; remote_send transfers it. */
  private sendComputed(req: Request): void {
    this.scheduler.remove(req);
    req.state = 'computed';
    req.resolveComputed();
  }

  private emit(req: Request, tokens: number[], finish?: FinishReason, error?: MicroserveError): void {
    const msg: TokensMsg = { type: 'tokens', id: req.id, engine: this.name, tokens };
    if (finish) msg.finish = finish;
    if (error) msg.error = error.toWire();
    try {
      this.opts.sink(req.replyTo ?? '', msg);
    } catch (e) {
      log.warn('token sink threw', { engine: this.name, id: req.id, err: e as Error });
    }
  }

  private isIdle(): boolean {
    return !this.isLooping && this.requests.size === 0;
  }

  private settleIdle(): void {
    if (!this.isIdle()) return;
    try {
      this.kv.checkIntegrity();
    } catch (e) {
      // A bug, not bad input: keep serving, say it loudly, and show it in integrityError.
      this.integrityError = (e as Error).message;
      log.error('KV integrity check failed', { engine: this.name, err: e as Error });
    }
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** @internal */
  assertOpen(): void {
    if (this.isClosed) throw new MicroserveError('ACTOR_STOPPED', `engine ${this.name} is closed`);
  }
}
