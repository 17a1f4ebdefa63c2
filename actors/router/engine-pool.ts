/**
 * The router's view of the engines: liveness, load and last status, kept by polling `status`
 * and by the runtime's `onActorGone`.
 *
 * - An engine is alive once its status answered and until it goes away (actor gone, a failed
 *   poll) or is marked suspect (a request's watchdog); the next answered poll revives it.
 * - Load = this router's requests on the engine now (`acquire`/`release`, updated the moment a
 *   strategy picks it) + whatever the last status reported beyond what the router had then.
 * - A changed pid in status means the engine's process was restarted (counted).
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
}

export const enginePath = (name: string) => `engine/${name}`;

export class EnginePool {
  private readonly engines = new Map<string, EngineState>();
  private readonly changeListeners = new Set<() => void>();
  private readonly goneListeners = new Set<(name: string) => void>();
  private timer: NodeJS.Timeout | null = null;
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
      else this.engines.set(e.name, { name: e.name, role: e.role, isAlive: false, status: null, activeAtStatus: 0, active: 0, restarts: 0, isPolling: false, inPlan: true });
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
      s.activeAtStatus = Math.min(activeBefore, s.active);
      if (!s.isAlive) {
        s.isAlive = true;
        log.info('engine up', { engine: s.name });
        for (const fn of this.changeListeners) fn();
      }
    } catch (e) {
      if (s.isAlive) this.markDown(s.name, `status failed: ${(e as Error).message}`, false);
    } finally {
      s.isPolling = false;
    }
  }
}
