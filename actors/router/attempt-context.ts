/**
 * The StrategyContext of one request attempt: engine operations bound to the attempt's id, with
 * timeouts, load accounting and a record of every engine touched (to abort them later).
 */
import { MicroserveError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import type { KvAddr, KvPageStats, PrepRecvResult, RemoteSendResult, Role, SamplingParams } from '../messages.ts';
import type { ActorSystemApi } from '../runtime/types.ts';
import { enginePath, type EnginePool } from './engine-pool.ts';
import type { RouterMetrics } from './metrics.ts';
import type { RoutedRequest, StrategyContext } from './strategy-api.ts';
import type { PlanEngine } from './types.ts';

export interface AttemptDeps {
  system: ActorSystemApi;
  pool: EnginePool;
  metrics: RouterMetrics;
  opTimeoutMs: number;
  transferTtlMs: number;
  /** Actor path engines stream tokens to. */
  replyTo: string;
}

const MATCH_TIMEOUT_MS = 2000;
const ABORT_TIMEOUT_MS = 2000;

export class AttemptContext implements StrategyContext {
  /** Engines any operation of this attempt reached. */
  readonly involved = new Set<string>();
  /** The engine that accepted start_generate (set when it is sent, cleared if it fails). */
  generating: string | null = null;
  /** Engines counted in the pool's load for this attempt. */
  private readonly held = new Set<string>();
  private isClosed = false;

  constructor(
    private readonly deps: AttemptDeps,
    private readonly planEngines: PlanEngine[],
    readonly params: Readonly<Record<string, unknown>>,
    private readonly req: RoutedRequest,
    /** Engines that failed earlier for this request: left out while others are alive. */
    private readonly excluded: ReadonlySet<string>,
  ) {}

  engines(role?: Role): string[] {
    const alive = this.planEngines
      .filter((e) => !role || e.role === role || e.role === 'both')
      .map((e) => e.name)
      .filter((n) => this.deps.pool.isAlive(n));
    const preferred = alive.filter((n) => !this.excluded.has(n));
    return preferred.length > 0 ? preferred : alive;
  }

  role(engine: string): Role {
    return this.planEngine(engine).role;
  }

  load(engine: string): number {
    return this.deps.pool.load(engine);
  }

  kv(engine: string): KvPageStats | null {
    return this.deps.pool.status(engine)?.kv ?? null;
  }

  async matchPrefix(engine: string, ids: readonly number[]): Promise<number> {
    this.planEngine(engine);
    try {
      const r = await this.ref(engine).query<{ matchedLen: number }>({ type: 'match_prefix', promptIds: [...ids] }, MATCH_TIMEOUT_MS);
      return Number.isFinite(r?.matchedLen) ? r.matchedLen : 0;
    } catch {
      return 0;
    }
  }

  async prepRecv(engine: string, ids: readonly number[], end: number): Promise<PrepRecvResult> {
    this.begin(engine, 'prep_recv');
    this.hold(engine);
    const msg = { type: 'prep_recv', id: this.req.id, promptIds: [...ids], end, ttlMs: this.deps.transferTtlMs };
    return this.op('prep_recv', engine, () => this.ref(engine).query<PrepRecvResult>(msg, this.deps.opTimeoutMs));
  }

  async remoteSend(engine: string, ids: readonly number[], begin: number, end: number, kvAddr: KvAddr): Promise<RemoteSendResult> {
    this.begin(engine, 'remote_send');
    const msg = { type: 'remote_send', id: this.req.id, promptIds: [...ids], begin, end, kvAddr, ttlMs: this.deps.transferTtlMs };
    // the sender's work counts as load while it runs; a receiver that dies fails the send at once
    this.deps.pool.acquire(engine);
    let stopWatch = () => {};
    const receiverGone = new Promise<never>((_, reject) => {
      stopWatch = this.deps.pool.onGone((name) => {
        if (name === kvAddr.engine) reject(new MicroserveError('TRANSFER_FAILED', `receiver '${name}' went away during remote_send`));
      });
    });
    try {
      const send = this.ref(engine).query<RemoteSendResult>(msg, this.deps.transferTtlMs + this.deps.opTimeoutMs);
      return await this.op('remote_send', engine, () => Promise.race([send, receiverGone]));
    } finally {
      stopWatch();
      this.deps.pool.release(engine);
    }
  }

  async startGenerate(engine: string, ids: readonly number[], begin: number): Promise<void> {
    if (this.generating) throw new MicroserveError('BAD_CONFIG', `strategy called startGenerate twice (on '${this.generating}' and '${engine}')`);
    this.begin(engine, 'start_generate');
    this.generating = engine;
    this.hold(engine);
    const sampling: SamplingParams = { ...this.req.sampling };
    const msg = { type: 'start_generate', id: this.req.id, promptIds: [...ids], begin, sampling, replyTo: this.deps.replyTo };
    try {
      await this.op('start_generate', engine, () => this.ref(engine).query(msg, this.deps.opTimeoutMs));
    } catch (e) {
      this.generating = null;
      throw e;
    }
    // only the generating engine keeps counting this request
    for (const h of [...this.held]) if (h !== engine) this.unhold(h);
  }

  async abort(engine: string): Promise<void> {
    if (!this.deps.pool.has(engine)) return;
    try {
      await this.ref(engine).query({ type: 'abort', id: this.req.id }, ABORT_TIMEOUT_MS);
    } catch (e) {
      log.debug('abort failed', { engine, id: this.req.id, error: e as Error });
    }
  }

  debug(msg: string, fields?: Record<string, unknown>): void {
    log.debug(msg, { id: this.req.id, ...fields });
  }

  /**
   * Aborts the attempt on every engine it touched and drops its load; operations the strategy
   * tries afterwards fail with ABORTED. Idempotent; never rejects.
   */
  abandon(): Promise<void> {
    this.close();
    this.abandoned ??= Promise.all([...this.involved].map((e) => this.abort(e))).then(() => undefined);
    return this.abandoned;
  }
  private abandoned: Promise<void> | null = null;

  /** Ends the attempt's accounting (finished or abandoned). */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const h of [...this.held]) this.unhold(h);
  }

  private planEngine(engine: string): PlanEngine {
    const e = this.planEngines.find((x) => x.name === engine);
    if (!e) throw new MicroserveError('NO_ENGINE', `strategy chose '${engine}', which is not an engine of the plan`);
    return e;
  }

  private begin(engine: string, op: string): void {
    this.planEngine(engine);
    if (this.isClosed) throw new MicroserveError('ABORTED', `request ${this.req.id} was given up before ${op}`);
    this.involved.add(engine);
  }

  private hold(engine: string): void {
    if (this.held.has(engine) || this.isClosed) return;
    this.held.add(engine);
    this.deps.pool.acquire(engine);
  }

  private unhold(engine: string): void {
    if (this.held.delete(engine)) this.deps.pool.release(engine);
  }

  private ref(engine: string) {
    return this.deps.system.ref(enginePath(engine));
  }

  private async op<T>(name: string, engine: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (e) {
      const code = e instanceof MicroserveError ? e.code : 'INTERNAL';
      this.deps.metrics.opFailures.inc({ op: name, code });
      log.debug('engine operation failed', { id: this.req.id, op: name, engine, code, error: e as Error });
      throw e;
    }
  }
}
