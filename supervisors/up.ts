/**
 * What `microserve up` does, as a function (the CLI and tests call it):
 *   1. load and validate the topology file (a bad file fails here, naming field and line);
 *   2. start the control node, the local node supervisor and the engine processes of host `local`;
 *   3. start the router (HTTP API) with the topology's plan and wait until every engine answers;
 *   4. watch the file: each valid new content is diffed and applied in place (roles, strategy,
 *      added and removed engines) while the engines keep running; an invalid one is refused and
 *      the running topology stays.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { MicroserveError } from '../common/errors.ts';
import { log } from '../common/log.ts';
import type { LoopMonitor } from '../common/loop-monitor.ts';
import type { Role } from '../actors/messages.ts';
import { startRouter } from '../actors/router/index.ts';
import type { Plan } from '../actors/router/types.ts';
import { loadTokenizer } from '../actors/text/loader.ts';
import { parseModelConfig } from '../native/config.ts';
import { PRESETS } from '../native/presets.ts';
import { resolveModelSource, type ModelSource } from '../native/model-source.ts';
import type { ModelConfig } from '../native/backend.ts';
import { applyTopology, type ApplyReport } from '../topology/apply.ts';
import { loadTopology, parseTopology } from '../topology/load.ts';
import { stringifyTopology } from '../topology/serialize.ts';
import type { EngineSpec, Topology } from '../topology/types.ts';
import { watchTopology } from '../topology/watch.ts';
import { Cluster, engineNodeId, engineProcSpec } from './cluster.ts';
import { readHosts } from './cluster-status.ts';
import type { ProcSpec } from './proc-spec.ts';

export interface UpOptions {
  /** [watch=true] hot-reload the topology file. */
  watch?: boolean;
  /** [readyTimeoutMs=180000] how long engines may take to load at `up`. */
  readyTimeoutMs?: number;
  /**
   * [router] overrides of the topology's `router.host` / `router.port` (`up --host/--port`); they
   * hold for every topology applied later too, so a reload never reports them as changes.
   */
  router?: { host?: string; port?: number };
  /** [loopMonitor] the event-loop monitor of the `up` process, for the router's `/metrics`. */
  loopMonitor?: LoopMonitor;
}

/**
 * How long an apply waits for an engine it starts (added or restarted) to answer: past it, or as
 * soon as the engine's process exits while starting, the apply fails and rolls back (the previous
 * settings run again). Override with `cluster.applyReadyTimeoutMs`.
 */
export const APPLY_READY_TIMEOUT_MS = 30_000;

export interface Up {
  cluster: Cluster;
  httpUrl: string;
  /** What `model` resolved to (the banner says whether its weights are random). */
  model: ModelSource;
}

/** Model facts the router and the banner need, without loading weights. */
export function describeModel(model: string): ModelSource & { config: ModelConfig } {
  const src = resolveModelSource(model);
  if (src.isPreset) return { ...src, config: PRESETS[model].config };
  const folder = src.folder!;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(resolve(folder, 'config.json'), 'utf8'));
  } catch (e) {
    throw new MicroserveError('BAD_CONFIG', `${folder}/config.json: ${(e as Error).message}`, { field: 'model' });
  }
  return { ...src, config: parseModelConfig(json) };
}

export async function startControlPlane(path: string, token: string, opts: UpOptions = {}): Promise<Up> {
  const override = (t: Topology): Topology => (opts.router ? { ...t, router: { ...t.router, ...opts.router } } : t);
  const topology = override(loadTopology(path));
  const model = describeModel(topology.model);
  const tokenizer = await loadTokenizer({ folder: model.folder, isPreset: model.isPreset });
  const cluster = await Cluster.start(topology, token);
  try {
    const r = topology.router;
    const router = await startRouter(cluster.system, {
      host: r.host,
      port: r.port,
      modelName: model.name,
      tokenizer,
      contextLength: model.config.maxPositions,
      vocabSize: model.config.vocabSize,
      eosTokenIds: model.config.eosTokenIds,
      apiKey: r.apiKey,
      maxQueue: r.maxQueue ?? null,
      engines: topology.engines.map((e) => ({ name: e.name, role: e.role })),
      strategy: r.strategy,
      params: r.params,
      baseDir: topology.source ? resolve(topology.source, '..') : process.cwd(),
      ...(opts.loopMonitor ? { loopMonitor: opts.loopMonitor } : {}),
    });
    cluster.router = router;
    cluster.applyHook = (next) => applyToCluster(cluster, next, performance.now(), override);
    await router.ready(opts.readyTimeoutMs ?? 180_000);
  } catch (e) {
    await cluster.close();
    throw e;
  }
  if (opts.watch !== false) {
    const w = watchTopology(path, async (c) => {
      if (!c.isValid) {
        log.error('topology file refused; the running topology stays', { error: c.error.message });
        cluster.lastApply = { at: new Date().toISOString(), refused: c.error.message };
        return;
      }
      try {
        await applyToCluster(cluster, c.topology, c.receivedAt, override);
      } catch (e) {
        log.error('topology apply failed; the running topology stays', { error: e as Error });
        cluster.lastApply = { at: new Date().toISOString(), refused: (e as Error).message };
      }
    });
    const close = cluster.close.bind(cluster);
    cluster.close = async () => {
      w.close();
      await close();
    };
  }
  return { cluster, httpUrl: (cluster.router as any).url, model };
}

let applying: Promise<unknown> = Promise.resolve();

/** Applies `next` (a Topology object, or YAML text from `microserve apply`) to the running cluster. */
export function applyToCluster(cluster: Cluster, next: Topology | string, receivedAt: number, override: (t: Topology) => Topology = (t) => t): Promise<ApplyReport> {
  const run = async () => {
    const t = override(typeof next === 'string' ? parseTopology(next, cluster.topology.source) : normalise(next, cluster.topology));
    const router = cluster.router as any;
    const drain = async (name: string) => {
      // the router no longer routes to it (plan changed first); wait for its work to finish
      const t0 = Date.now();
      for (;;) {
        const st = await cluster.system.ref(`engine/${name}`).query<any>({ type: 'status' }, 2000).catch(() => null);
        if (!st || st.numRunning + st.numWaiting === 0 || Date.now() - t0 > 120_000) break;
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const byName = (name: string) => cluster.topology.engines.find((e) => e.name === name);
    const before = cluster.topology;
    const readyMs = cluster.applyReadyTimeoutMs ?? APPLY_READY_TIMEOUT_MS;
    cluster.nvshmemEpoch++; // engines this apply starts form new NVSHMEM jobs
    const actual = await actualTopology(cluster, t);
    const report = await applyTopology(
      actual,
      t,
      {
        spawnEngine: async (spec: EngineSpec) => {
          cluster.topology = { ...cluster.topology, engines: [...cluster.topology.engines.filter((e) => e.name !== spec.name), spec] };
          await cluster.startEngine(spec, t);
          // an NVSHMEM member is ready only once every member of its (new) job started: later hooks start them
          if (!isNvshmemMember(engineProcSpec(t, spec))) await cluster.waitEngineReady(spec.name, readyMs, true);
        },
        setRole: async (name: string, role: Role) => {
          await cluster.system.ref(`engine/${name}`).query({ type: 'set_role', role }, 5000);
        },
        setPlan: (plan: Plan) => router.setPlan(plan),
        drainAndStop: async (name: string) => {
          const spec = byName(name) ?? t.engines.find((e) => e.name === name);
          await drain(name);
          // an agent host that is away: its agent stops the engine when it rejoins (Cluster.reconcileHost)
          if (spec) await cluster.stopEngine(spec).catch((e) => {
            if (spec.host === 'local') throw e;
            log.warn('the host of a removed engine does not answer: its agent stops it when it rejoins', { engine: name, host: spec.host, error: (e as Error).message });
          });
        },
        restartEngine: async (spec: EngineSpec, isRollback = false) => {
          const old = byName(spec.name);
          await drain(spec.name);
          if (old) await cluster.stopEngine(old);
          const topo = isRollback ? before : t;
          cluster.topology = { ...cluster.topology, model: topo.model, transport: topo.transport, engines: cluster.topology.engines.map((e) => (e.name === spec.name ? spec : e)) };
          const procSpec = engineProcSpec(topo, spec, cluster.nvshmemEpoch);
          await cluster.system.ref(`supervisor/${spec.host}`).query({ type: 'start', spec: procSpec }, 10_000);
          if (!isNvshmemMember(procSpec)) await cluster.waitEngineReady(spec.name, readyMs, true);
        },
      },
      { version: cluster.version, receivedAt },
    ).catch((e) => {
      cluster.topology = before;
      throw e;
    });
    cluster.topology = t;
    cluster.version = report.version;
    cluster.lastApply = { at: new Date().toISOString(), version: report.version, changes: report.changes, reconfigureMs: +report.reconfigureMs.toFixed(2), drainMs: +report.drainMs.toFixed(2) };
    return report;
  };
  const p = applying.then(run, run);
  applying = p.catch(() => undefined);
  return p;
}

/**
 * The running topology as it really is, for the diff against `next`: the last applied one, less
 * the engines `next` keeps whose process is not running any more (failed: the supervisor gave up;
 * stopped or unknown to a supervisor that answered). So an engine that crash-looped is started
 * again by the next apply (the same file included), not reported as "no changes"; and one that
 * `next` drops stays in, so the diff removes it: out of the router's plan, and its supervisor
 * forgets it (`status` stops listing it as failed).
 */
async function actualTopology(cluster: Cluster, next: Topology): Promise<Topology> {
  const hosts = await readHosts(cluster.system, [...new Set(cluster.topology.engines.map((e) => e.host))]);
  const isGone = (e: EngineSpec) => {
    const h = hosts.find((x) => x.host === e.host);
    if (!h || h.pid === null) return false; // its host's supervisor did not answer: we cannot tell
    const p = h.procs.find((x) => x.nodeId === engineNodeId(e.name));
    return (!p || p.state === 'failed' || p.state === 'stopped') && next.engines.some((x) => x.name === e.name);
  };
  const gone = cluster.topology.engines.filter(isGone);
  if (gone.length > 0) log.warn('engines not running: the apply starts them again', { engines: gone.map((e) => e.name).join(' ') });
  return { ...cluster.topology, engines: cluster.topology.engines.filter((e) => !isGone(e)) };
}

/**
 * A Topology object sent over the wire: re-validate it through the same parser as files. Its
 * `source` (the file `microserve apply` read) becomes the running topology's, so `status` names
 * the file actually applied.
 */
function normalise(t: Topology, current: Topology): Topology {
  if (t === null || typeof t !== 'object') throw new MicroserveError('TOPOLOGY_INVALID', 'apply needs a topology');
  const source = typeof t.source === 'string' && t.source.length > 0 ? t.source : current.source;
  return parseTopology(stringifyTopology(t), source);
}

function isNvshmemMember(s: ProcSpec): boolean {
  return s.kind === 'engine' && !!s.nvshmem;
}
