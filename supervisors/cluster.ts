/**
 * The cluster as `microserve up` runs it: the control node (directory + `control` actor), one
 * node supervisor per host (`supervisor/local` in-process, `supervisor/<host>` from agents),
 * the engine processes the topology places on each host, and the router.
 *
 * `control` answers: status, kill {path, process}, restart {path}, apply {topology}, topology.
 */
import { MicroserveError } from '../common/errors.ts';
import { log } from '../common/log.ts';
import { ControlMsgSchema, messageParser, type ControlMsg, type EngineStatus } from '../actors/messages.ts';
import { ActorSystem } from '../actors/runtime/system.ts';
import { nvshmemJobs } from '../topology/diff.ts';
import type { EngineSpec, Topology } from '../topology/types.ts';
import { NodeSupervisor } from './node-supervisor.ts';
import { locate, readActors, readHosts, type ActorStatus } from './cluster-status.ts';
import { procPath } from './proc-actor.ts';
import { engineNodeId, type ProcSpec, type ProcStatus } from './proc-spec.ts';
import { spawnNvshmemRendezvous } from './nvshmem-rendezvous.ts';
import { keeperPath } from './agent-keeper.ts';
import { spawnSupervisorActor } from './supervisor-actor.ts';

export type { ActorStatus } from './cluster-status.ts';

export interface ClusterStatus {
  topologyVersion: number;
  topologySource: string | null;
  strategy: string;
  lastApply: unknown;
  actors: ActorStatus[];
}

export { engineNodeId } from './proc-spec.ts';

/**
 * The process of engine `e`. With `transport: nvshmem` a GPU engine that has GPU peers on its host
 * gets its NVSHMEM job: named by the members (topology/diff.ts nvshmemJobs) and `epoch` (a new
 * set of processes is a new job), rank = its place among the members sorted by name.
 */
export function engineProcSpec(t: Topology, e: EngineSpec, epoch = 0): ProcSpec {
  const spec: ProcSpec = { kind: 'engine', nodeId: engineNodeId(e.name), engine: e, model: t.model, transport: t.transport };
  if (t.transport === 'nvshmem' && e.device.startsWith('cuda:')) {
    const jobs = nvshmemJobs(t);
    const job = jobs.get(e.name)!;
    const members = t.engines.filter((x) => jobs.get(x.name) === job).map((x) => x.name).sort();
    if (members.length > 1) spec.nvshmem = { job: `${job}#${epoch}`, rank: members.indexOf(e.name), nranks: members.length };
  }
  return spec;
}

export class Cluster {
  readonly system: ActorSystem;
  topology: Topology;
  version = 1;
  lastApply: unknown = null;
  private readonly localSup: NodeSupervisor;
  /** Router hooks, set by `up` once the router is started. */
  router: null | {
    status(): unknown;
    setPlan(plan: { engines: { name: string; role: string }[]; strategy: string; params: Record<string, unknown> }): Promise<unknown> | unknown;
    close(): Promise<void>;
  } = null;
  /** [applyReadyTimeoutMs=APPLY_READY_TIMEOUT_MS (supervisors/up.ts)] how long an apply waits for an engine it starts. */
  applyReadyTimeoutMs: number | null = null;
  /** Applies a new topology; set by `up` (topology/apply.ts wiring). */
  applyHook: null | ((next: Topology | string) => Promise<unknown>) = null;

  private constructor(system: ActorSystem, topology: Topology, token: string) {
    this.system = system;
    this.topology = topology;
    this.localSup = new NodeSupervisor(system, { host: 'local', controlUrl: system.url!, token });
    spawnSupervisorActor(system, 'local', this.localSup);
    const parse = messageParser('control', ControlMsgSchema);
    system.spawn('control', (msg: unknown) => this.onControl(parse(msg)));
    spawnNvshmemRendezvous(system);
    // engines placed on another host start when that host's agent joins (again)
    system.onActorAdded((path) => {
      const m = /^supervisor\/(.+)$/.exec(path);
      if (m && m[1] !== 'local') void this.reconcileHost(m[1]).catch((err) => log.error('cannot start the engines of an agent host', { host: m[1], error: err as Error }));
    });
  }

  static async start(topology: Topology, token: string): Promise<Cluster> {
    const system = await ActorSystem.start({
      nodeId: 'control',
      token,
      listen: { host: topology.control.host, port: topology.control.port },
      maxFrameBytes: topology.control.maxFrameBytes,
    });
    const c = new Cluster(system, topology, token);
    for (const e of topology.engines) if (e.host === 'local') await c.startEngine(e);
    return c;
  }

  /** Epoch of NVSHMEM jobs: 0 for the processes `up` starts, then one more per apply that restarts engines. */
  nvshmemEpoch = 0;

  /** Starts an engine on its host's supervisor (local now; remote once its agent joined). */
  async startEngine(e: EngineSpec, topology: Topology = this.topology): Promise<void> {
    const sup = `supervisor/${e.host}`;
    if (e.host !== 'local' && !this.system.listActors().some((a) => a.path === sup)) {
      log.info('engine waits for its host agent', { engine: e.name, host: e.host });
      return;
    }
    await this.system.ref(sup).query({ type: 'start', spec: engineProcSpec(topology, e, this.nvshmemEpoch) }, 10_000);
  }

  /**
   * Makes an agent host run what the topology places there, once its agent process registers
   * `supervisor/<host>` (first join, a restarted agent process, a rejoin after `up` restarted):
   * engines it still runs with the same spec are kept (adopted, weights loaded), the others are
   * started; engine processes the topology no longer places there are stopped.
   */
  async reconcileHost(host: string): Promise<void> {
    const sup = this.system.ref(`supervisor/${host}`);
    const st = await sup.query<{ procs: ProcStatus[] }>({ type: 'status' }, 10_000);
    const wanted = this.topology.engines.filter((e) => e.host === host);
    const names = new Set(wanted.map((e) => engineNodeId(e.name)));
    for (const p of st.procs) {
      if (!p.nodeId.startsWith(engineNodeId('')) || names.has(p.nodeId)) continue;
      log.info('stopping an engine the topology no longer places on this host', { host, nodeId: p.nodeId });
      await sup.query({ type: 'stop', nodeId: p.nodeId, graceMs: 5000 }, 15_000);
    }
    for (const e of wanted) {
      // BAD_REQUEST: it runs with another spec (an older topology): replace it
      await this.startEngine(e).catch(async (err) => {
        if ((err as MicroserveError).code !== 'BAD_REQUEST') throw err;
        await this.stopEngine(e);
        await this.startEngine(e);
      });
    }
  }

  async stopEngine(e: EngineSpec, graceMs = 5000): Promise<void> {
    await this.system.ref(`supervisor/${e.host}`).query({ type: 'stop', nodeId: engineNodeId(e.name), graceMs }, graceMs + 5000);
  }

  /**
   * Resolves once `engine/<name>` answers status. Rejects after timeoutMs, or (`isFailFast`) as
   * soon as its process exits before answering: an engine that cannot start fails the apply at
   * its first crash instead of after the supervisor's whole crash loop.
   */
  async waitEngineReady(name: string, timeoutMs = 120_000, isFailFast = false): Promise<EngineStatus> {
    const t0 = Date.now();
    const since = new Date(t0 - 1).toISOString();
    const host = this.topology.engines.find((e) => e.name === name)?.host ?? 'local';
    for (let i = 0; ; i++) {
      try {
        return await this.system.ref(`engine/${name}`).query<EngineStatus>({ type: 'status' }, 2000);
      } catch (e) {
        if (Date.now() - t0 > timeoutMs) throw new MicroserveError('NO_ENGINE', `engine '${name}' not ready after ${timeoutMs} ms: ${(e as Error).message}`);
        if (isFailFast && i % 4 === 3) {
          const [h] = await readHosts(this.system, [host]);
          const p = h.procs.find((x) => x.nodeId === engineNodeId(name));
          if (p?.state === 'failed' || (p?.lastExit && p.lastExit.at >= since)) {
            throw new MicroserveError('NO_ENGINE', `engine '${name}' exited while starting (code ${p.lastExit?.code}, signal ${p.lastExit?.signal})${p.gaveUp ? `; ${p.gaveUp}` : ''}`);
          }
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Hosts with a node supervisor: local and every host the topology places engines on. */
  private hosts(): string[] {
    return [...new Set(['local', ...(this.topology.hosts ?? []).map((h) => h.name), ...this.topology.engines.map((e) => e.host)])];
  }

  async status(): Promise<ClusterStatus> {
    const hosts = await readHosts(this.system, this.hosts());
    return {
      topologyVersion: this.version,
      topologySource: this.topology.source ?? null,
      strategy: this.topology.router.strategy,
      lastApply: this.lastApply,
      actors: await readActors(this.system, hosts, this.topology.engines),
    };
  }

  /**
   * Kills an actor (`process: false`: stopped as a crash would, its node restarts it) or SIGKILLs
   * the OS process hosting it (its supervisor restarts it: the node supervisor of its host for an
   * engine, the agent's keeper for an agent process). Both come back under the restart policy.
   */
  async kill(path: string, isProcess: boolean): Promise<unknown> {
    const where = locate(this.system, await readHosts(this.system, this.hosts()), path);
    if (where.nodeId === this.system.nodeId) {
      if (isProcess) throw new MicroserveError('BAD_REQUEST', `'${path}' lives in the control process; kill it with SIGTERM on 'up'`);
      this.system.kill(path, 'killed');
      return { stopped: path };
    }
    if (!isProcess) return this.system.ref(procPath(where.nodeId)).query({ type: 'stop_actor', path }, 5000);
    if (!where.supervisor) {
      const what = path.startsWith('keeper/') ? "the keeper process of `microserve agent`, which nothing in the cluster restarts (like `up`; its agent process and engines exit with it)" : 'a process no supervisor started';
      throw new MicroserveError('BAD_REQUEST', `'${path}' runs in node '${where.nodeId}', ${what}: stop that process yourself`);
    }
    return this.system.ref(where.supervisor).query({ type: 'kill', nodeId: where.nodeId }, 5000);
  }

  /**
   * Brings a failed (or restarting, or running) actor back now with a fresh crash window: its
   * process is relaunched if that is what failed, else the actor is restarted in its node. An
   * engine of an agent host whose agent process is not running brings that agent process back
   * (which then starts its engines).
   */
  async restart(path: string): Promise<unknown> {
    const hosts = await readHosts(this.system, this.hosts());
    let where: ReturnType<typeof locate>;
    try {
      where = locate(this.system, hosts, path);
    } catch (e) {
      const m = /^(?:engine|kv)\/(.+)$/.exec(path);
      const host = m ? this.topology.engines.find((x) => x.name === m[1])?.host : undefined;
      const agent = host ? hosts.find((h) => h.host === host)?.keeper?.agent : undefined;
      if (!host || !agent || agent.state === 'running') throw e;
      await this.system.ref(keeperPath(host)).query({ type: 'restart', nodeId: agent.nodeId }, 5000);
      return { restarted: path, process: agent.nodeId };
    }
    if (where.nodeId === this.system.nodeId) {
      this.system.restart(path);
      return { restarted: path };
    }
    if (where.proc && where.supervisor && where.proc.state !== 'running') {
      await this.system.ref(where.supervisor).query({ type: 'restart', nodeId: where.nodeId }, 5000);
      return { restarted: path, process: where.nodeId };
    }
    return this.system.ref(procPath(where.nodeId)).query({ type: 'restart_actor', path }, 5000);
  }

  private async onControl(msg: ControlMsg): Promise<unknown> {
    switch (msg.type) {
      case 'status':
        return this.status();
      case 'kill':
        return this.kill(msg.path, msg.process);
      case 'restart':
        return this.restart(msg.path);
      case 'topology':
        return { version: this.version, topology: this.topology };
      case 'apply':
        if (!this.applyHook) throw new MicroserveError('BAD_REQUEST', 'this cluster cannot apply topologies');
        return this.applyHook(msg.topology as Topology | string);
    }
  }

  async close(): Promise<void> {
    try {
      await this.router?.close();
    } catch (e) {
      log.warn('router close failed', { error: e as Error });
    }
    const remoteHosts = [...new Set(this.topology.engines.map((e) => e.host))].filter((h) => h !== 'local');
    await Promise.all(
      this.topology.engines
        .filter((e) => remoteHosts.includes(e.host))
        .map((e) => this.stopEngine(e, 3000).catch(() => undefined)),
    );
    await this.localSup.stopAll(3000);
    await this.system.close();
  }
}
