/**
 * EngineCore: one model, one KV pool, the continuous-batching loop, and every engine operation.
 * Used directly by `microserve generate` and tests; `actor.ts` wraps it as `engine/<name>`.
 *
 * The core owns its parts and wires them through hooks (none of them imports this file):
 * - `scheduler` (scheduler.ts): which tokens of which requests the next step computes;
 * - `requests` (request-table.ts): live requests and how each ends;
 * - `runner` (step-runner.ts): one step's forward, with failure isolation;
 * - `post` (postprocess.ts): a forward's results applied to its requests (tokens, finishes);
 * - `receiver` and `sender` (kv-transfer/): prep_recv / kv_write / push leases, and remote_send
 *   (whose layer-by-layer GPU push rides on the step's forward).
 *
 * The loop runs while there is work, off the actor mailbox: each step is schedule → run →
 * postprocess, and with overlap (the default) step t+1 is submitted to the backend between
 * applying step t's tokens and sending them, so the backend does not wait for the sends
 * (`loop`). The loop's host time is measured (host-timing.ts: `status` counters.host).
 * Operations called meanwhile (status, prep_recv, abort, ...) run while a forward runs,
 * synchronously, on the event loop.
 */
import type { Backend } from '../../native/backend.ts';
import { MicroserveError, isMicroserveError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import { KvCacheManager } from '../kvcache/manager.ts';
import { defaultMaxBatchTokens, type EngineCounters, type EngineStatus, type GenerateMsg, type KvPushBeginMsg, type KvPushEndMsg, type KvWriteMsg, type PrepRecvMsg, type PrepRecvResult, type RemoteSendMsg, type RemoteSendResult, type Role, type StartGenerateMsg } from '../messages.ts';
import { HostClock, newHostTimes } from './host-timing.ts';
import { Grammars, type GrammarStats } from './grammar/grammars.ts';
import { KvReceiver } from './kv-transfer/receiver.ts';
import type { ReservationTable } from './kv-transfer/reservations.ts';
import { KvSender } from './kv-transfer/sender.ts';
import { Request } from './request.ts';
import { RequestTable } from './request-table.ts';
import { checkSamplingExtras } from './sampling-params.ts';
import { Scheduler, type SchedulerLimits, type StepEntry } from './scheduler.ts';
import { StepPostprocess, type HeldToken } from './postprocess.ts';
import { engineStatus } from './status.ts';
import { StepRunner, type StepPart } from './step-runner.ts';
import type { EngineCoreOptions } from './types.ts';
import { DEFAULT_MAX_NUM_SEQS, newCounters } from './types.ts';
import { checkFits, checkId, checkInt, checkSampling, checkTokens, type Capacity } from './validate.ts';

const ROLES: Role[] = ['prefill', 'decode', 'both'];

function positiveInt(v: number, field: string): number {
  if (!Number.isInteger(v) || v < 1) throw new TypeError(`${field} must be a positive integer, got ${v}`);
  return v;
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
  /** Message of the last failed idle integrity check (null: all checks passed). */
  integrityError: string | null = null;
  private readonly opts: EngineCoreOptions;
  private readonly scheduler: Scheduler;
  private readonly table: RequestTable;
  private readonly runner: StepRunner;
  private readonly post: StepPostprocess;
  private readonly receiver: KvReceiver;
  private readonly sender: KvSender;
  private readonly clock: HostClock;
  /** Submit step t+1 before sending step t's tokens (EngineCoreOptions.overlap). */
  readonly isOverlap: boolean;
  private readonly grammars: Grammars;
  private isLooping = false;
  private isClosed = false;
  private idleWaiters: (() => void)[] = [];

  constructor(opts: EngineCoreOptions) {
    this.opts = opts;
    this.name = opts.name;
    this.model = opts.model ?? opts.name;
    this.role = opts.role ?? 'both';
    this.backend = opts.backend;
    this.isOverlap = opts.overlap ?? true;
    this.limits = {
      maxBatchTokens: positiveInt(opts.maxBatchTokens ?? defaultMaxBatchTokens(opts.backend.device), 'maxBatchTokens'),
      maxNumSeqs: positiveInt(opts.maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS, 'maxNumSeqs'),
    };
    this.clock = new HostClock((this.counters.host = newHostTimes()));
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
    const vocabSize = opts.backend.config.vocabSize;
    this.grammars = new Grammars({ tokenizer: opts.tokenizer ?? null, vocabSize, eosTokenIds: opts.backend.config.eosTokenIds, cacheSize: opts.grammarCacheSize, numWorkers: opts.grammarWorkers });
    this.table = new RequestTable({ engine: this.name, kv: this.kv, scheduler: this.scheduler, sink: opts.sink, kick: () => this.kick(), numSamplingSlots: opts.backend.plan?.maxNumSeqs, onRelease: (req) => this.grammars.release(req) });
    this.receiver = new KvReceiver(
      {
        name: this.name,
        kv: this.kv,
        backend: opts.backend,
        vocabSize,
        capacity: this.capacity,
        counters: this.counters,
        transports: opts.acceptTransports ?? ['host'],
        ipc: opts.ipc,
        nvshmem: opts.nvshmem,
        defaultTtlMs: opts.defaultTtlMs,
        pushLeaseGraceMs: opts.pushLeaseGraceMs,
      },
      { hasRequest: (id) => this.table.byKey.has(id), onPagesReleased: () => this.kick() },
    );
    this.sender = new KvSender(
      { name: this.name, pageSize: this.kv.pageSize, backend: opts.backend, vocabSize, capacity: this.capacity, counters: this.counters, pickTransport: opts.pickTransport, defaultTtlMs: opts.defaultTtlMs },
      {
        hasRequest: (key) => this.table.byKey.has(key),
        submit: (req) => {
          this.table.add(req);
          this.scheduler.enqueue(req);
          this.kick();
        },
        stop: (req, err) => this.table.stopSend(req, err),
        finish: (req, cache) => this.table.release(req, cache),
        afterStep: (req) => this.table.afterStep(req),
      },
    );
    this.post = new StepPostprocess(this.table, this.counters, this.capacity.maxPositions);
    // a grammar found complete (or failed) while the next step runs ends its request now (that row's token is discarded)
    const outcomes = { complete: (req: Request) => this.table.stopGenerate(req, 'stop'), fail: (req: Request, err: MicroserveError) => this.table.stopGenerate(req, 'error', [], err) };
    this.runner = new StepRunner(this.name, this.counters, (entries, batch) => this.sender.forward(entries, batch), this.table.samplingSlots, {
      prepare: (rows) => this.grammars.prepare(rows, outcomes),
      keep: (rows, step) => this.grammars.keepMasks(rows, step),
      supply: (id, masks) => this.backend.supplyMasks(id, masks),
    });
  }

  /** Live requests by key (generate: id; send: `send:<id>`); read-only for callers. */
  get requests(): ReadonlyMap<string, Request> {
    return this.table.byKey;
  }

  /** Host time of structured outputs (the loop's wait for accepts, mask fills under forwards); read-only for callers. */
  get grammarStats(): Readonly<GrammarStats> {
    return this.grammars.stats;
  }

  /** The prep_recv reservations (receiver side); read-only for callers. */
  get reservations(): Pick<ReservationTable, 'has' | 'size' | 'isExpired'> {
    return this.receiver.reservations;
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
    const sampling = { ...checkSampling(msg.sampling, op), ...checkSamplingExtras(msg.sampling as unknown as Record<string, unknown>, op, this.backend.config.vocabSize, promptIds.length) };
    const grammar = this.grammars.check((msg.sampling as { grammar?: unknown }).grammar, op);
    if (grammar) sampling.grammar = grammar;
    const begin = checkInt(msg.begin ?? 0, op, 'begin', 0, promptIds.length);
    if (typeof msg.replyTo !== 'string') throw new MicroserveError('BAD_REQUEST', `${op}: replyTo must be an actor path`, { field: 'replyTo' });
    if (this.table.byKey.has(id)) throw new MicroserveError('DUPLICATE_REQUEST', `${op}: request '${id}' already exists on ${this.name}`);
    checkFits(promptIds.length, sampling.maxTokens, this.capacity, op);
    // prompt logprobs need every prompt position computed here: no KV taken from a reservation
    if (sampling.promptLogprobs !== undefined && begin > 0 && this.receiver.reservations.has(id)) {
      throw new MicroserveError('BAD_REQUEST', `${op}: sampling.promptLogprobs needs the whole prompt computed on this engine (begin 0, no prep_recv)`, { field: 'sampling.promptLogprobs' });
    }
    const claim = this.receiver.claim(id, promptIds, begin, op);
    const req = new Request({ id, kind: 'generate', promptIds, sampling, replyTo: msg.replyTo });
    if (claim) {
      req.seq = claim.seq;
      req.numComputed = claim.start;
      req.numCachedOnAdmit = claim.matchedLen;
    }
    this.counters.requests++;
    this.table.add(req);
    if (sampling.maxTokens === 0 && !req.promptLogprobs) {
      this.table.stopGenerate(req, 'length');
      return;
    }
    const schedule = () => {
      if (claim) this.scheduler.addRunning(req);
      else this.scheduler.enqueue(req);
      this.kick();
    };
    if (!grammar) return schedule();
    // the grammar (compiled, or from the cache) first: the request is in the table meanwhile, so abort finds it
    this.grammars.open(req).then(
      () => {
        if (req.state !== 'waiting') return; // ended meanwhile (abort)
        if (req.isGrammarComplete) this.table.stopGenerate(req, 'stop');
        else schedule();
      },
      (err) => this.table.stopGenerate(req, 'error', [], isMicroserveError(err) ? err : new MicroserveError('BAD_GRAMMAR', `${op}: ${(err as Error).message}`)),
    );
  }

  /** prep_recv: reserve pages for [matched, end) (kv-transfer/receiver.ts). */
  prepRecv(msg: Omit<PrepRecvMsg, 'type'>): PrepRecvResult {
    this.assertOpen();
    return this.receiver.prepRecv(msg);
  }

  /** kv_write: page bytes into a live reservation's pages (host transport receiver). */
  kvWrite(msg: Omit<KvWriteMsg, 'type'>): Promise<{ ok: true }> {
    return this.receiver.kvWrite(msg);
  }

  /** kv_push_begin: lease reserved pages to a sender's GPU push (kv-transfer/leases.ts). */
  kvPushBegin(msg: Omit<KvPushBeginMsg, 'type'>): { ok: true } {
    return this.receiver.pushBegin(msg);
  }

  /** kv_push_end: end a push lease; `ok` marks its pages received. */
  kvPushEnd(msg: Omit<KvPushEndMsg, 'type'>): { ok: true; bytes: number } {
    return this.receiver.pushEnd(msg);
  }

  /** remote_send: compute what this engine lacks of [0, end), write [begin, end) to kvAddr (kv-transfer/sender.ts). */
  remoteSend(msg: Omit<RemoteSendMsg, 'type'>): Promise<RemoteSendResult> {
    try {
      this.assertOpen();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.sender.remoteSend(msg);
  }

  /** Aborts request `id` at any stage (queued, running, sending, reserved). */
  abort(id: string): { aborted: boolean } {
    let found = false;
    const gen = this.table.byKey.get(id);
    if (gen) {
      found = true;
      this.table.stopGenerate(gen, 'abort');
    }
    const send = this.table.byKey.get(`send:${id}`);
    if (send) {
      found = true;
      this.table.stopSend(send, new MicroserveError('ABORTED', `request '${id}' was aborted`));
    }
    if (this.receiver.release(id)) found = true;
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
    return { numStepsToFail: this.runner.failNext(count) };
  }

  setRole(role: Role): { role: Role } {
    if (!ROLES.includes(role)) throw new MicroserveError('BAD_REQUEST', `set_role: role must be one of ${ROLES.join(', ')}`, { field: 'role' });
    this.role = role;
    return { role };
  }

  status(): EngineStatus {
    const { name, model, role, backend, kv, limits, counters } = this;
    return engineStatus({ name, model, role, backend, kv, limits, counters, isOverlap: this.isOverlap, requests: this.table, scheduler: this.scheduler, receiver: this.receiver, loopMonitor: this.opts.loopMonitor });
  }

  /** Resolves when no request is queued, running or sending (the integrity check has run). */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Aborts everything, ends push leases and reservations, refuses new work; the backend is the owner's to close. */
  close(): void {
    if (this.isClosed) return;
    for (const r of [...this.table.byKey.values()]) this.abort(r.id);
    this.receiver.close();
    void this.grammars.close();
    this.isClosed = true;
  }

  // --- the loop ---------------------------------------------------------------------------------

  /** Starts the loop (after the current call returns) if it is not running and there is work. */
  private kick(): void {
    if (this.isLooping) return;
    if (this.isClosed || this.scheduler.isEmpty) {
      this.settleIdle();
      return;
    }
    this.isLooping = true;
    queueMicrotask(() => void this.loop());
  }

  /**
   * Steps while there is work: schedule → run → postprocess, with step t+1 submitted before step
   * t's tokens are sent (overlap). Postprocessing is split: `post.apply` (postprocess.ts) applies
   * the tokens and decides finishes (what scheduling step t+1 needs: its decode inputs, freed pages), and
   * `table.flush` sends them (one message per destination) while the backend runs step t+1.
   * Grammar rows' tokens are staged for their matchers (`grammars.accept`) and go to the workers
   * with step t+1's mask fill once step t+1 is submitted (`dispatch` sends the rest): the accept
   * runs under that forward, and its outcomes (postprocess.ts `settle`) are in before step t+1's
   * tokens are applied (`whenAccepted`).
   */
  private async loop(): Promise<void> {
    try {
      let running = this.launch();
      while (running || this.grammars.isAccepting) {
        if (!running) {  // only held finishes left: their pages may let a step run
          await this.grammars.whenAccepted();
          running = this.launch();
          this.grammars.dispatch();
          continue;
        }
        const parts = await running;
        this.clock.resulted();
        if (this.grammars.isAccepting) await this.grammars.whenAccepted();
        const held: HeldToken[] = [];
        for (const part of parts) this.post.apply(part, held);
        this.grammars.accept(held, (h, outcome) => this.post.settle(h, outcome));
        this.clock.lap('updateMs');
        if (this.isOverlap) {
          running = this.launch();
          this.grammars.dispatch();
        }
        this.table.flush();
        this.clock.lap('sendMs');
        if (!this.isOverlap) {
          await null; // the runtime writes dispatched messages in a microtask: let them go first
          running = this.launch();
          this.grammars.dispatch();
        }
      }
    } catch (e) {
      log.error('engine loop failed', { engine: this.name, err: e as Error });
    } finally {
      this.grammars.dispatch(); // tokens staged when the loop failed still go (their outcomes settle)
      this.clock.idle();
      this.isLooping = false;
      this.settleIdle();
    }
  }

  /**
   * Schedules the next step and submits its forward; null when nothing can run now (no work, or
   * short of pages: a release kicks the loop again).
   */
  private launch(): Promise<StepPart[]> | null {
    while (!this.isClosed && !this.scheduler.isEmpty) {
      this.clock.begin();
      const entries = this.schedule();
      this.clock.lap('scheduleMs');
      if (!entries) return null;
      if (entries.length === 0) continue; // sends served from cache, or a preemption: schedule again
      const running = this.run(entries);
      this.clock.lap('buildMs');
      this.clock.submitted();
      return running;
    }
    return null;
  }

  /** The scheduler's next step (sends it found fully cached leave it at once); null: no progress possible now. */
  private schedule(): StepEntry[] | null {
    const numPreempted = this.scheduler.numPreempted;
    const plan = this.scheduler.schedule();
    for (const req of plan.ready) this.table.sendComputed(req);
    const isProgress = plan.entries.length > 0 || plan.ready.length > 0 || this.scheduler.numPreempted !== numPreempted;
    return isProgress ? plan.entries : null;
  }

  /** The step's forward (step-runner.ts), its requests marked in flight meanwhile. */
  private async run(entries: StepEntry[]): Promise<StepPart[]> {
    this.table.beginStep(entries);
    try {
      return await this.runner.run(entries);
    } finally {
      this.table.endStep();
    }
  }

  private isIdle(): boolean {
    return !this.isLooping && this.table.size === 0;
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

  private assertOpen(): void {
    if (this.isClosed) throw new MicroserveError('ACTOR_STOPPED', `engine ${this.name} is closed`);
  }
}
