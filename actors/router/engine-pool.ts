/**
 * The router's view of the engines: liveness, load and last status, kept by polling `status`
 * and by the runtime's `onActorGone`.
 *
 * - An engine is alive once its status answered and until it goes away (actor gone, a failed
 *   poll) or is marked suspect (a request's watchdog); the next answered poll revives it.
 * - Load = this router's requests on the engine now (`acquire`/`release`, updated the moment a
 *   strategy picks it) + whatever the last status reported beyond what the router had then.
 * - A changed pid in status means the engine's process was restarted (counted).
 * - Progress = the engine's work counters (tokens prefilled, generated, received) moved between
 *   two polls; the request watchdog tells a busy engine from a silent one by it.
 */
import type { EngineStatus, Role } from '../messages.ts';
import { log } from '../../common/log.ts';
import type { ActorSystemApi } from '../runtime/types.ts';
import type { EngineView, PlanEngine } from './types.ts';

interface EngineState {
  name: string;
  role: Role;
  isAlive: boolean;
  status: EngineStatus | null;
  /** Router-live count when `status` was taken. */
  activeAtStatus: number;
  active: number;
  restarts: number;
  isPolling: boolean;
  inPlan: boolean;
  /** Sum of the work counters at the last status, and when it last changed. */
  work: number;
  lastProgressAt: number;
}

export const enginePath = (name: string) => `engine/${name}`;

export class EnginePool {
  private readonly engines = new Map<string, EngineState>();
  private readonly changeListeners = new Set<() => void>();
  private readonly goneListeners = new Set<(name: string) => void>();
  private timer: NodeJS.Timeout | null = null;
  /** Every plan engine has answered status at least once (startup is over). */
  private hasStarted = false;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly system: ActorSystemApi,
    private readonly opts: { statusIntervalMs: number; statusTimeoutMs: number },
  ) {
    this.unsubscribe = system.onActorGone((path) => {
      const m = /^engine\/(.+)$/.exec(path);
      if (m) this.markDown(m[1], 'actor gone', true);
    });
  }

  start(): void {
    this.pollAll();
    this.timer = setInterval(() => this.pollAll(), this.opts.statusIntervalMs);
    this.timer.unref();
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.unsubscribe();
  }

  /** The current plan's engines; engines that left it are kept while requests still use them. */
  setPlanEngines(list: PlanEngine[]): void {
    for (const s of this.engines.values()) s.inPlan = false;
    for (const e of list) {
      const s = this.engines.get(e.name);
      if (s) Object.assign(s, { role: e.role, inPlan: true });
      else this.engines.set(e.name, { name: e.name, role: e.role, isAlive: false, status: null, activeAtStatus: 0, active: 0, restarts: 0, isPolling: false, inPlan: true, work: -1, lastProgressAt: 0 });
    }
    this.pollAll();
  }

  has(name: string): boolean {
    return this.engines.has(name);
  }

  isAlive(name: string): boolean {
    return this.engines.get(name)?.isAlive ?? false;
  }

  load(name: string): number {
    const s = this.engines.get(name);
    if (!s) return Infinity;
    const reported = s.status ? s.status.numRunning + s.status.numWaiting : 0;
    return s.active + Math.max(0, reported - s.activeAtStatus);
  }

  status(name: string): EngineStatus | null {
    return this.engines.get(name)?.status ?? null;
  }

  /** Whether a status poll saw the engine do work (prefill, decode, KV received) after time `t` (performance.now()). */
  progressedSince(name: string, t: number): boolean {
    const s = this.engines.get(name);
    return !!s && s.isAlive && s.lastProgressAt > t;
  }

  acquire(name: string): void {
    const s = this.engines.get(name);
    if (s) s.active++;
  }

  release(name: string): void {
    const s = this.engines.get(name);
    if (s && s.active > 0) s.active--;
  }

  /** A request's watchdog found the engine silent: route around it until its next answered poll. */
  markSuspect(name: string): void {
    this.markDown(name, 'silent', false);
  }

  /** Plan engines that have not answered status (yet, or any more). */
  missing(): string[] {
    return [...this.engines.values()].filter((s) => s.inPlan && !s.isAlive).map((s) => s.name);
  }

  /**
   * What `/health` says. `starting` (503) until every plan engine has answered once; then `ok`
   * (200) with every plan engine alive, `degraded` (200, the ones down listed) while at least one
   * serves, `unavailable` (503) when none does.
   */
  health(): { status: 'starting' | 'ok' | 'degraded' | 'unavailable'; isServing: boolean; down: string[] } {
    const down = this.missing();
    if (down.length === 0) this.hasStarted = true;
    const numPlan = [...this.engines.values()].filter((s) => s.inPlan).length;
    if (!this.hasStarted) return { status: 'starting', isServing: false, down };
    if (down.length === 0) return { status: 'ok', isServing: true, down };
    return down.length < numPlan ? { status: 'degraded', isServing: true, down } : { status: 'unavailable', isServing: false, down };
  }

  views(): EngineView[] {
    return [...this.engines.values()]
      .filter((s) => s.inPlan || s.active > 0)
      .map((s) => ({ name: s.name, role: s.role, isAlive: s.isAlive, load: this.load(s.name), restarts: s.restarts, status: s.status }));
  }

  /** Calls fn when any engine comes up or goes down. */
  onChange(fn: () => void): () => void {
    this.changeListeners.add(fn);
    return () => this.changeListeners.delete(fn);
  }

  /** Calls fn when an engine's actor is gone (its process died or it was stopped). */
  onGone(fn: (name: string) => void): () => void {
    this.goneListeners.add(fn);
    return () => this.goneListeners.delete(fn);
  }

  /** `isGone`: the actor is gone (its requests must move); else it is only routed around. */
  private markDown(name: string, why: string, isGone: boolean): void {
    const s = this.engines.get(name);
    if (!s) return;
    if (isGone) for (const fn of this.goneListeners) fn(name);
    if (!s.isAlive) return;
    s.isAlive = false;
    log.warn('engine down', { engine: name, why });
    for (const fn of this.changeListeners) fn();
  }

  private pollAll(): void {
    for (const s of [...this.engines.values()]) {
      if (!s.inPlan && s.active === 0) {
        this.engines.delete(s.name);
        continue;
      }
      if (!s.isPolling) void this.poll(s);
    }
  }

  private async poll(s: EngineState): Promise<void> {
    s.isPolling = true;
    const activeBefore = s.active;
    try {
      const st = await this.system.ref(enginePath(s.name)).query<EngineStatus>({ type: 'status' }, this.opts.statusTimeoutMs);
      if (s.status && st.pid !== s.status.pid) {
        s.restarts++;
        log.info('engine restarted', { engine: s.name, pid: st.pid });
      }
      s.status = st;
      const c = st.counters;
      const work = c ? c.tokensPrefilled + c.tokensGenerated + c.tokensReceived : 0;
      if (work !== s.work) {
        s.work = work;
        s.lastProgressAt = performance.now();
      }
      s.activeAtStatus = Math.min(activeBefore, s.active);
      if (!s.isAlive) {
        s.isAlive = true;
        log.info('engine up', { engine: s.name });
        if (this.missing().length === 0) this.hasStarted = true;
        for (const fn of this.changeListeners) fn();
      }
    } catch (e) {
      if (s.isAlive) this.markDown(s.name, `status failed: ${(e as Error).message}`, false);
    } finally {
      s.isPolling = false;
    }
  }
}
