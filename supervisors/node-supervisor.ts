/**
 * Node supervisor: spawns the processes of one host, watches exit codes and heartbeats (a node
 * whose connection misses heartbeats is SIGKILLed and restarted), and restarts a crashed process
 * under the restart policy (actors/runtime/restart-policy.ts: backoff doubling from `backoffMs`,
 * state `failed` with the reason after more than `maxRestarts` crashes within `windowMs`, until
 * `restart` or a new `start`). Children hold an IPC channel to it and exit when it closes, so a
 * killed supervisor leaves no orphans. One per host: in-process in `microserve up`, or the agent
 * process of `microserve agent` (supervisors/agent-worker.ts); the agent's keeper process uses one
 * too, for the agent process itself (supervisors/agent-keeper.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MicroserveError } from '../common/errors.ts';
import { log } from '../common/log.ts';
import { CrashWindow, DEFAULT_RESTART_POLICY } from '../actors/runtime/restart-policy.ts';
import type { ActorSystem } from '../actors/runtime/system.ts';
import { specPaths, type ProcSpec, type ProcStatus } from './proc-spec.ts';

export interface SupervisorOptions {
  /** Host name this supervisor runs engines for. */
  host: string;
  /** Control-plane URL the children join, and the token they use. */
  controlUrl: string;
  token: string;
  /** [maxRestarts=5] crashes within windowMs after which it gives up (restart policy). */
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
  window: CrashWindow;
  isStopping: boolean;
  restartTimer?: NodeJS.Timeout;
  /** Set by `restart` on a live process: its exit is relaunched at once, not counted. */
  restartNow?: boolean;
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
    const d = DEFAULT_RESTART_POLICY;
    this.o = { maxRestarts: d.maxRestarts, windowMs: d.windowMs, backoffMs: d.backoffMs, env: {}, ...opts };
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

  /**
   * Starts a process for `spec`. A failed one (gave up) is replaced; a live one that runs this very
   * spec is kept as it is (adopted: a host's engines when its agent rejoins a restarted `up`); a
   * live one with another spec is refused.
   */
  start(spec: ProcSpec): ProcStatus {
    const existing = this.procs.get(spec.nodeId);
    if (existing && existing.status.state !== 'stopped' && existing.status.state !== 'failed') {
      if (!existing.isStopping && JSON.stringify(existing.spec) === JSON.stringify(spec)) return { ...existing.status };
      throw new MicroserveError('BAD_REQUEST', `process '${spec.nodeId}' is already supervised (${existing.status.state}); stop it first`, { field: 'spec.nodeId' });
    }
    const p: Proc = {
      spec,
      child: null,
      window: new CrashWindow({ maxRestarts: this.o.maxRestarts, windowMs: this.o.windowMs, backoffMs: this.o.backoffMs }),
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

  /** The spec a process runs (or last ran). */
  spec(nodeId: string): ProcSpec | undefined {
    return this.procs.get(nodeId)?.spec;
  }

  /**
   * Brings a process back now with a fresh crash window: a failed one is launched again, a
   * restarting one skips its backoff, a running one is SIGKILLed and restarted.
   */
  restart(nodeId: string): boolean {
    const p = this.procs.get(nodeId);
    if (!p || p.isStopping) return false;
    p.window.clear();
    delete p.status.gaveUp;
    if (p.child && p.child.exitCode === null && p.child.signalCode === null) {
      p.restartNow = true;
      p.child.kill('SIGKILL');
      return true;
    }
    clearTimeout(p.restartTimer);
    p.status.restarts += 1;
    this.launch(p);
    return true;
  }

  /** SIGKILLs the process (resilience testing); the supervisor restarts it as after any crash. */
  kill(nodeId: string): boolean {
    const p = this.procs.get(nodeId);
    if (!p?.child || p.child.exitCode !== null) return false;
    p.child.kill('SIGKILL');
    return true;
  }

  /**
   * Stops one process for good: SIGTERM, then SIGKILL after graceMs. Once it has exited the
   * supervisor forgets it (status no longer lists it).
   */
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
    if (this.procs.get(nodeId) === p) this.procs.delete(nodeId);
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
      // the IPC channel is the child's lifeline: it exits when this supervisor dies (process-main.ts)
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
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
    if (p.restartNow) {
      p.restartNow = false;
      p.status.restarts += 1;
      this.launch(p);
      return;
    }
    const d = p.window.record(`code ${code}, signal ${signal}`);
    if (d.gaveUp !== undefined) {
      p.status.gaveUp = d.gaveUp.replace('failures', 'crashes');
      log.error('giving up on crash-looping process', { nodeId: p.spec.nodeId, why: p.status.gaveUp });
      this.setState(p, 'failed');
      return;
    }
    log.warn('process exited; restarting', { nodeId: p.spec.nodeId, code, signal, inMs: d.delayMs });
    this.setState(p, 'restarting');
    p.restartTimer = setTimeout(() => {
      if (p.isStopping) return;
      p.status.restarts += 1;
      this.launch(p);
    }, d.delayMs);
  }

  private setState(p: Proc, state: ProcStatus['state']): void {
    p.status.state = state;
    for (const fn of this.listeners) fn({ ...p.status });
  }
}
