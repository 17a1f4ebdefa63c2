/**
 * Node supervisor: spawns the processes of one host, watches exit codes and heartbeats (a node
 * whose connection misses heartbeats is SIGKILLed and restarted), restarts a crashed process with
 * exponential backoff, and gives up after `maxRestarts` crashes within `windowMs` (state `dead`,
 * reported by status). One per host: in-process in `microserve up`, or `microserve agent`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { log } from '../common/log.ts';
import type { ActorSystem } from '../actors/runtime/system.ts';
import { specPaths, type ProcSpec, type ProcStatus } from './proc-spec.ts';

export interface SupervisorOptions {
  /** Host name this supervisor runs engines for. */
  host: string;
  /** Control-plane URL the children join, and the token they use. */
  controlUrl: string;
  token: string;
  /** [maxRestarts=5] crashes within windowMs after which it gives up. */
  maxRestarts?: number;
  /** [windowMs=60000] */
  windowMs?: number;
  /** [backoffMs=250] first restart delay, doubled per crash in the window, capped at 5 s. */
  backoffMs?: number;
  /** Extra environment for the children. */
  env?: Record<string, string>;
}

interface Proc {
  spec: ProcSpec;
  child: ChildProcess | null;
  status: ProcStatus;
  crashTimes: number[];
  isStopping: boolean;
  restartTimer?: NodeJS.Timeout;
  hungTimer?: NodeJS.Timeout;
  exited?: Promise<void>;
}

const MAIN = fileURLToPath(new URL('./process-main.ts', import.meta.url));

export class NodeSupervisor {
  private readonly procs = new Map<string, Proc>();
  private readonly o: Required<Omit<SupervisorOptions, 'env'>> & { env: Record<string, string> };
  private readonly listeners = new Set<(s: ProcStatus) => void>();

  constructor(
    private readonly system: ActorSystem,
    opts: SupervisorOptions,
  ) {
    this.o = { maxRestarts: 5, windowMs: 60_000, backoffMs: 250, env: {}, ...opts };
    // A child's actors vanish from the directory when its connection dies or misses heartbeats.
    // If the process is still there it is hung (SIGSTOP, a wedged native call): kill it so the
    // exit path restarts it.
    system.onActorGone((path, nodeId) => {
      const p = this.procs.get(nodeId);
      if (!p || p.isStopping || !p.child || p.child.exitCode !== null) return;
      if (!specPaths(p.spec).includes(path) || p.hungTimer) return;
      // only this child: by the time the timer fires a dead one may have been replaced
      const child = p.child;
      p.hungTimer = setTimeout(() => {
        p.hungTimer = undefined;
        if (p.child === child && child.exitCode === null && child.signalCode === null && !p.isStopping) {
          log.warn('process lost its connection but did not exit: killing it', { nodeId, pid: child.pid });
          child.kill('SIGKILL');
        }
      }, 300);
    });
    system.onActorAdded?.((path, nodeId) => {
      const p = this.procs.get(nodeId);
      if (p && specPaths(p.spec)[0] === path && p.status.state !== 'running') this.setState(p, 'running');
    });
  }

  onChange(fn: (s: ProcStatus) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  start(spec: ProcSpec): ProcStatus {
    const existing = this.procs.get(spec.nodeId);
    if (existing && existing.status.state !== 'stopped' && existing.status.state !== 'dead') {
      throw new TypeError(`process '${spec.nodeId}' is already supervised`);
    }
    const p: Proc = {
      spec,
      child: null,
      crashTimes: [],
      isStopping: false,
      status: { nodeId: spec.nodeId, host: this.o.host, pid: null, state: 'starting', restarts: 0, paths: specPaths(spec) },
    };
    this.procs.set(spec.nodeId, p);
    this.launch(p);
    return { ...p.status };
  }

  status(): ProcStatus[] {
    return [...this.procs.values()].map((p) => ({ ...p.status }));
  }

  get(nodeId: string): ProcStatus | undefined {
    const p = this.procs.get(nodeId);
    return p && { ...p.status };
  }

  /** SIGKILLs the process (resilience testing); the supervisor restarts it as after any crash. */
  kill(nodeId: string): boolean {
    const p = this.procs.get(nodeId);
    if (!p?.child || p.child.exitCode !== null) return false;
    p.child.kill('SIGKILL');
    return true;
  }

  /** Stops one process for good: SIGTERM, then SIGKILL after graceMs. */
  async stop(nodeId: string, graceMs = 3000): Promise<void> {
    const p = this.procs.get(nodeId);
    if (!p) return;
    p.isStopping = true;
    clearTimeout(p.restartTimer);
    clearTimeout(p.hungTimer);
    const child = p.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await p.exited;
      clearTimeout(t);
    }
    this.setState(p, 'stopped');
  }

  async stopAll(graceMs = 3000): Promise<void> {
    await Promise.all([...this.procs.keys()].map((id) => this.stop(id, graceMs)));
  }

  private launch(p: Proc): void {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, JSON.stringify(p.spec)], {
      env: {
        ...process.env,
        ...this.o.env,
        MICROSERVE_TOKEN: this.o.token,
        MICROSERVE_CONTROL: this.o.controlUrl,
        MICROSERVE_NODE_ID: p.spec.nodeId,
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    p.child = child;
    p.status.pid = child.pid ?? null;
    if (p.status.state !== 'restarting') this.setState(p, 'starting');
    p.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.once('exit', (code, signal) => this.onExit(p, child, code, signal));
    log.info('process started', { nodeId: p.spec.nodeId, pid: child.pid });
  }

  private onExit(p: Proc, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (p.child !== child) return;
    clearTimeout(p.hungTimer);
    p.hungTimer = undefined;
    p.status.lastExit = { code, signal, at: new Date().toISOString() };
    p.status.pid = null;
    if (p.isStopping) return;
    const now = Date.now();
    p.crashTimes = p.crashTimes.filter((t) => now - t < this.o.windowMs);
    p.crashTimes.push(now);
    if (p.crashTimes.length > this.o.maxRestarts) {
      p.status.gaveUp = `${p.crashTimes.length} crashes within ${this.o.windowMs} ms (last: code ${code}, signal ${signal})`;
      log.error('giving up on crash-looping process', { nodeId: p.spec.nodeId, why: p.status.gaveUp });
      this.setState(p, 'dead');
      return;
    }
    const delay = Math.min(this.o.backoffMs * 2 ** (p.crashTimes.length - 1), 5000);
    log.warn('process exited; restarting', { nodeId: p.spec.nodeId, code, signal, inMs: delay });
    this.setState(p, 'restarting');
    p.restartTimer = setTimeout(() => {
      if (p.isStopping) return;
      p.status.restarts += 1;
      this.launch(p);
    }, delay);
  }

  private setState(p: Proc, state: ProcStatus['state']): void {
    p.status.state = state;
    for (const fn of this.listeners) fn({ ...p.status });
  }
}
