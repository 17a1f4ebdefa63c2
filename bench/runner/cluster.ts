/**
 * The cluster a bench run drives: one it starts itself from a topology file (`microserve up` as a
 * child process, stopped at the end), or one already running (`--base-url`). Strategies switch by
 * hot reload: the running topology with another `router.strategy`/`params` is pushed to the
 * control plane (`{ type: 'apply', topology }` to `control`, what `microserve apply` sends); the
 * engines keep running, so every strategy meets the same engine processes and settings.
 *
 * A cluster the bench starts listens on free ports (router and control port 0, through a
 * temporary copy of the topology) unless `keepPorts`, and keeps its run file in a private
 * MICROSERVE_HOME, so it never collides with a cluster the user runs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MicroserveError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import { connect } from '../../actors/runtime/client.ts';
import type { ActorSystem } from '../../actors/runtime/system.ts';
import { newToken, type RunFile } from '../../actors/runtime/token.ts';
import { loadTopology } from '../../topology/load.ts';
import { stringifyTopology, withStrategy } from '../../topology/serialize.ts';
import type { Topology } from '../../topology/types.ts';

const CLI = fileURLToPath(new URL('../../bin/microserve.js', import.meta.url));

export interface BenchCluster {
  baseUrl: string;
  apiKey?: string;
  /** The running topology, when the control plane is reachable. */
  topology: Topology | null;
  /** Applies the running topology with another strategy; resolves to the apply report. */
  switchStrategy(name: string, params: Record<string, unknown>): Promise<unknown>;
  /**
   * Empties every engine's prefix cache (pages no request holds), so each strategy starts cold on
   * the same trace; resolves to the pages evicted, or null without a control plane.
   */
  flushCaches(): Promise<number | null>;
  /**
   * Puts back the strategy (and params) the cluster ran when the bench attached, if the bench
   * switched it; resolves to a line saying what it did, or null when there was nothing to undo.
   * A cluster the bench started itself is stopped instead.
   */
  restore(): Promise<string | null>;
  stop(): Promise<void>;
}

export interface OwnClusterOptions {
  /** [keepPorts=false] listen on the file's ports instead of free ones. */
  keepPorts?: boolean;
  /** [startTimeoutMs=300000] until the router's /health answers 200. */
  startTimeoutMs?: number;
}

/** Pushes `topology` to `control` and returns its apply report. */
export async function applyVia(sys: ActorSystem, topology: Topology, timeoutMs = 120_000): Promise<unknown> {
  return sys.ref('control').query({ type: 'apply', topology }, timeoutMs);
}

/** Switching = the running topology (asked from `control` each time) with another strategy. */
function controlSwitcher(getSys: () => Promise<ActorSystem | null>) {
  return async (name: string, params: Record<string, unknown>) => {
    const sys = await getSys();
    if (!sys) throw new MicroserveError('BAD_CONFIG', 'switching strategies needs the control plane (pass --control and a token via MICROSERVE_TOKEN, or run where `microserve up` runs)');
    const running = (await sys.ref('control').query<{ topology: Topology }>({ type: 'topology' }, 10_000)).topology;
    return applyVia(sys, withStrategy(running, name, params));
  };
}

/** Flushing = `flush_cache` to every engine of the running topology. */
function controlFlusher(getSys: () => Promise<ActorSystem | null>) {
  return async (): Promise<number | null> => {
    const sys = await getSys();
    if (!sys) return null;
    const running = (await sys.ref('control').query<{ topology: Topology }>({ type: 'topology' }, 10_000)).topology;
    const r = await Promise.all(running.engines.map((e) => sys.ref(`engine/${e.name}`).query<{ evictedPages: number }>({ type: 'flush_cache' }, 10_000)));
    return r.reduce((a, x) => a + x.evictedPages, 0);
  };
}

/** Starts `microserve up` on a topology file and waits until its router is healthy. */
export async function startOwnCluster(topologyPath: string, o: OwnClusterOptions = {}): Promise<BenchCluster> {
  const topology = loadTopology(topologyPath);
  const home = mkdtempSync(join(tmpdir(), 'microserve-bench-'));
  let file = topology.source!;
  if (!o.keepPorts) {
    file = join(home, 'topology.yaml');
    const t = { ...topology, router: { ...topology.router, port: 0 }, control: { ...topology.control, port: 0 } };
    writeFileSync(file, stringifyTopology(t), { mode: 0o600 });
  }
  const token = newToken();
  const child: ChildProcess = spawn(process.execPath, [CLI, 'up', file, '--no-watch'], {
    env: { ...process.env, MICROSERVE_TOKEN: token, MICROSERVE_HOME: home },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let tail = '';
  const keep = (d: Buffer) => (tail = (tail + d.toString()).slice(-4000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let exit: number | null = null;
  const exited = new Promise<void>((r) => child.once('exit', (code, sig) => ((exit = code ?? (sig ? 128 : 1)), r())));

  const stop = async () => {
    if (exit === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        log.warn('microserve up did not stop within 30 s: SIGKILL', { pid: child.pid });
        child.kill('SIGKILL');
      }, 30_000);
      await exited;
      clearTimeout(timer);
    }
    await sys?.close().catch(() => undefined);
    rmSync(home, { recursive: true, force: true });
  };
  let sys: ActorSystem | null = null;
  try {
    const run = await waitFor(o.startTimeoutMs ?? 300_000, () => exit, () => readRun(home, child.pid!), 'the run file');
    await waitFor(o.startTimeoutMs ?? 300_000, () => exit, () => isHealthy(run.httpUrl), 'router /health');
    const getSys = async () => (sys ??= await connect(run.controlUrl, { token }));
    return { baseUrl: run.httpUrl, apiKey: topology.router.apiKey, topology, switchStrategy: controlSwitcher(getSys), flushCaches: controlFlusher(getSys), restore: async () => null, stop };
  } catch (e) {
    await stop();
    throw new MicroserveError('NO_ENGINE', `microserve up did not come up: ${(e as Error).message}\n--- its output (tail) ---\n${tail}`);
  }
}

/** Attaches to a running cluster; the control plane is only needed to switch strategies. */
export async function attachCluster(baseUrl: string, o: { control?: string; apiKey?: string }): Promise<BenchCluster> {
  let sys: ActorSystem | null = null;
  let topology: Topology | null = null;
  try {
    sys = await connect(o.control);
    topology = (await sys.ref('control').query<{ topology: Topology }>({ type: 'topology' }, 10_000)).topology;
  } catch (e) {
    log.info('no control plane reachable: the running strategy is benchmarked as is', { reason: (e as Error).message });
    await sys?.close().catch(() => undefined);
    sys = null;
  }
  const found = topology ? { strategy: topology.router.strategy, params: topology.router.params } : null;
  const switcher = controlSwitcher(async () => sys);
  let isSwitched = false;
  return {
    baseUrl: baseUrl.replace(/\/+$/, '').replace(/\/v1$/, ''),
    apiKey: o.apiKey ?? topology?.router.apiKey,
    topology,
    switchStrategy: (name, params) => {
      isSwitched = true;
      return switcher(name, params);
    },
    flushCaches: controlFlusher(async () => sys),
    restore: async () => {
      if (!isSwitched || !found) return null;
      isSwitched = false;
      const r = (await switcher(found.strategy, found.params)) as { changes?: string[] } | null;
      return `restored the strategy the cluster ran before: ${found.strategy}${Object.keys(found.params).length > 0 ? ` ${JSON.stringify(found.params)}` : ''}${r?.changes?.length ? '' : ' (already running)'}`;
    },
    stop: async () => void (await sys?.close().catch(() => undefined)),
  };
}

async function waitFor<T>(timeoutMs: number, exitCode: () => number | null, probe: () => Promise<T | null> | T | null, what: string): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const code = exitCode();
    if (code !== null) throw new Error(`it exited with code ${code} before ${what} was ready`);
    const v = await probe();
    if (v !== null) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`${what} not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function readRun(home: string, pid: number): RunFile | null {
  try {
    const rf = JSON.parse(readFileSync(join(home, 'run.json'), 'utf8')) as RunFile;
    return rf.pid === pid && !rf.isStarting ? rf : null; // a claim placeholder has no urls yet
  } catch {
    return null;
  }
}

async function isHealthy(url: string): Promise<true | null> {
  try {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
    return res.ok ? true : null;
  } catch {
    return null;
  }
}
