/**
 * The cluster's real state, read from its supervisors (never from the last plan): which process
 * hosts each actor (node supervisors' ProcStatus), whether each actor runs (the hosting node's
 * actor supervision, `proc/<nodeId>` `supervision`), restarts, last exit and why a part failed.
 * Hosts run by `microserve agent` add their keeper's view of the agent process (`keeper/<host>`),
 * so an agent that is down, restarting or failed is shown so, and so are the engines the plan
 * places on its host. Also finds where a path lives, for `kill` and `restart`.
 */
import { MicroserveError } from '../common/errors.ts';
import type { EngineStatus } from '../actors/messages.ts';
import type { ActorSupervision, ActorSystemApi } from '../actors/runtime/types.ts';
import { keeperPath } from './agent-keeper.ts';
import { procPath } from './proc-actor.ts';
import { engineNodeId, type ProcStatus } from './proc-spec.ts';

export interface ActorStatus {
  path: string;
  kind: string;
  role: string | null;
  host: string;
  pid: number | null;
  /** Times the actor came back: its own restarts plus its process's. */
  restarts: number;
  /**
   * `starting` also covers a plan engine whose host's agent has not joined (yet); `restarting` an
   * engine whose agent process is being restarted; `failed` one whose agent process failed.
   */
  state: 'starting' | 'running' | 'restarting' | 'stopped' | 'failed';
  nodeId: string;
  /** Why it (or its process) last went down, and when. */
  lastExit?: { reason: string; at: string };
  /** Why supervision gave up (state `failed`); `microserve restart <path>` or an apply brings it back. */
  failed?: string;
  /** Engines: running + waiting requests. */
  queueDepth?: number;
  /** Engines: KV page accounting. */
  kv?: EngineStatus['kv'];
  counters?: EngineStatus['counters'];
  /** Engines: the memory plan made at start (weights / arena / KV bytes, KV tokens, longest request). */
  plan?: EngineStatus['plan'];
}

/** What the keeper of an agent host (`keeper/<host>`) reports. */
export interface KeeperView {
  pid: number;
  /** The agent process (node `agent-<host>`), as the keeper supervises it. */
  agent: ProcStatus | null;
  /** The keeper's own actors. */
  actors: ActorSupervision[];
}

export interface HostProcs {
  host: string;
  /** null: the host's supervisor did not answer. */
  pid: number | null;
  procs: ProcStatus[];
  /** Agent hosts: their keeper's answer (null: none answered). Absent for `local`. */
  keeper?: KeeperView | null;
}

/** A plan engine: where the topology places it. */
export interface PlannedEngine {
  name: string;
  host: string;
  role: string;
}

/** Asks each host's `supervisor/<host>` for its processes, and agent hosts' keepers (2 s each, in parallel). */
export async function readHosts(system: ActorSystemApi, hosts: string[]): Promise<HostProcs[]> {
  return Promise.all(
    hosts.map(async (host) => {
      const [sup, keeper] = await Promise.all([
        system.ref(`supervisor/${host}`).query<{ pid: number; procs: ProcStatus[] }>({ type: 'status' }, 2000).catch(() => null),
        host === 'local' ? undefined : readKeeper(system, host),
      ]);
      const h: HostProcs = { host, pid: sup?.pid ?? null, procs: sup?.procs ?? [] };
      if (keeper !== undefined) h.keeper = keeper;
      return h;
    }),
  );
}

async function readKeeper(system: ActorSystemApi, host: string): Promise<KeeperView | null> {
  const r = await system
    .ref(keeperPath(host))
    .query<{ pid: number; procs: ProcStatus[]; actors: ActorSupervision[] }>({ type: 'status' }, 2000)
    .catch(() => null);
  return r && { pid: r.pid, agent: r.procs[0] ?? null, actors: r.actors };
}

/**
 * Where `path` lives: the node hosting it and, when a supervisor runs that node's process, the
 * path of that supervisor (`supervisor/<host>` for engines, `keeper/<host>` for an agent process).
 */
export function locate(system: ActorSystemApi, hosts: HostProcs[], path: string): { nodeId: string; supervisor: string | null; proc?: ProcStatus } {
  if (system.supervision().some((a) => a.path === path)) return { nodeId: system.nodeId, supervisor: null };
  const supervised = hosts.flatMap((h) => [
    ...h.procs.map((p) => ({ p, supervisor: `supervisor/${h.host}` })),
    ...(h.keeper?.agent ? [{ p: h.keeper.agent, supervisor: keeperPath(h.host) }] : []),
  ]);
  for (const { p, supervisor } of supervised) if (p.paths.includes(path) || procPath(p.nodeId) === path) return { nodeId: p.nodeId, supervisor, proc: p };
  const entry = system.listActors().find((a) => a.path === path);
  if (entry) {
    const s = supervised.find((x) => x.p.nodeId === entry.nodeId);
    return s ? { nodeId: entry.nodeId, supervisor: s.supervisor, proc: s.p } : { nodeId: entry.nodeId, supervisor: null };
  }
  throw new MicroserveError('ACTOR_NOT_FOUND', `no actor at '${path}'`);
}

function row(a: ActorSupervision, host: string, pid: number | null, nodeId: string): ActorStatus {
  const r: ActorStatus = { path: a.path, kind: a.path.split('/')[0], role: null, host, pid, restarts: a.restarts, state: a.state, nodeId };
  if (a.lastExit) r.lastExit = a.lastExit;
  if (a.failed) r.failed = a.failed;
  return r;
}

const later = <T extends { at: string }>(a?: T, b?: T): T | undefined => (!a ? b : !b ? a : a.at >= b.at ? a : b);

const exitOf = (p: ProcStatus, what = 'process') =>
  p.lastExit ? { reason: `${what} exited (code ${p.lastExit.code}, signal ${p.lastExit.signal})`, at: p.lastExit.at } : undefined;

/** The rows of an agent host's keeper and agent process (`keeper/<host>`, `supervisor/<host>`). */
async function agentRows(system: ActorSystemApi, h: HostProcs): Promise<ActorStatus[]> {
  const rows: ActorStatus[] = [];
  const keeper = h.keeper;
  const own = keeper?.actors.find((a) => a.path === keeperPath(h.host));
  if (keeper && own) rows.push(row(own, h.host, keeper.pid, `keeper-${h.host}`));
  const path = `supervisor/${h.host}`;
  const entry = system.listActors().find((a) => a.path === path);
  const sup = entry ? await system.ref(procPath(entry.nodeId)).query<{ actors: ActorSupervision[] }>({ type: 'supervision' }, 1500).catch(() => null) : null;
  const actor = sup?.actors.find((a) => a.path === path);
  const agent = keeper?.agent ?? null;
  let r: ActorStatus;
  if (actor) {
    r = row(actor, h.host, h.pid, entry!.nodeId);
    if (agent?.state === 'restarting' || agent?.state === 'failed') r.state = agent.state; // its process just died
  } else if (agent) {
    const state = agent.state === 'running' ? (h.pid ? 'running' : 'starting') : agent.state;
    r = { path, kind: 'supervisor', role: null, host: h.host, pid: agent.pid, restarts: 0, state, nodeId: agent.nodeId };
  } else {
    r = { path, kind: 'supervisor', role: null, host: h.host, pid: h.pid, restarts: 0, state: h.pid ? 'running' : 'starting', nodeId: entry?.nodeId ?? '-' };
  }
  if (agent) {
    r.restarts += agent.restarts;
    const lastExit = later(exitOf(agent), r.lastExit);
    if (lastExit) r.lastExit = lastExit;
    if (agent.gaveUp) r.failed = agent.gaveUp;
  }
  rows.push(r);
  return rows;
}

/**
 * Rows of a plan engine its host's supervisor does not report: its agent is away (restarting,
 * failed, not joined yet) or has not started it yet. Never `running`.
 */
function absentEngineRows(e: PlannedEngine, h: HostProcs | undefined): ActorStatus[] {
  const agent = h && h.pid === null ? h.keeper?.agent : undefined;
  const state: ActorStatus['state'] = agent?.state === 'failed' ? 'failed' : agent?.state === 'restarting' ? 'restarting' : 'starting';
  return [`engine/${e.name}`, `kv/${e.name}`].map((path) => {
    const r: ActorStatus = { path, kind: path.split('/')[0], role: e.role, host: e.host, pid: null, restarts: 0, state, nodeId: engineNodeId(e.name) };
    const lastExit = agent && exitOf(agent, `the agent process of host ${e.host}`);
    if (lastExit) r.lastExit = lastExit;
    if (agent?.gaveUp) r.failed = `the agent process of host ${e.host} failed: ${agent.gaveUp}`;
    return r;
  });
}

/**
 * One row per actor: the control node's own actors, each agent host's keeper and supervisor, the
 * actors of every supervised process (with the process's pid, state and restarts folded in), and
 * plan engines no supervisor reports (never as running).
 */
export async function readActors(system: ActorSystemApi, hosts: HostProcs[], engines: PlannedEngine[]): Promise<ActorStatus[]> {
  const roleOf = (name: string) => engines.find((e) => e.name === name)?.role ?? null;
  const actors: ActorStatus[] = system.supervision().filter((a) => !a.path.startsWith('proc/')).map((a) => row(a, 'local', process.pid, system.nodeId));
  const known = new Set(system.listActors().map((a) => a.path));
  for (const h of hosts) if (h.host !== 'local') actors.push(...(await agentRows(system, h)));
  const procs = hosts.flatMap((h) => h.procs);
  const details = await Promise.all(
    procs.map(async (p) => {
      if (p.state !== 'running') return { sup: null, engine: null };
      const sup = await system.ref(procPath(p.nodeId)).query<{ actors: ActorSupervision[] }>({ type: 'supervision' }, 1500).catch(() => null);
      const enginePath = p.paths.find((x) => x.startsWith('engine/'));
      const engine = enginePath ? await system.ref(enginePath).query<EngineStatus>({ type: 'status' }, 1500).catch(() => null) : null;
      return { sup, engine };
    }),
  );
  procs.forEach((p, i) => {
    const { sup, engine } = details[i];
    for (const path of p.paths) {
      const [kind, name] = path.split('/');
      const a = sup?.actors.find((x) => x.path === path);
      let state: ActorStatus['state'] = p.state;
      // a running process whose actor is not (yet) registered is still starting it
      if (p.state === 'running') state = a ? a.state : known.has(path) ? 'running' : 'starting';
      const r: ActorStatus = { path, kind, role: engine?.role ?? roleOf(name), host: p.host, pid: p.pid, restarts: p.restarts + (a?.restarts ?? 0), state, nodeId: p.nodeId };
      const lastExit = later(exitOf(p), a?.lastExit);
      if (lastExit) r.lastExit = lastExit;
      const failed = p.gaveUp ?? a?.failed;
      if (failed) r.failed = failed;
      if (engine && kind === 'engine') {
        r.queueDepth = engine.numRunning + engine.numWaiting;
        r.counters = engine.counters;
        if (engine.plan) r.plan = engine.plan;
      }
      if (engine) r.kv = engine.kv;
      actors.push(r);
    }
  });
  for (const e of engines) {
    if (!actors.some((a) => a.path === `engine/${e.name}`)) actors.push(...absentEngineRows(e, hosts.find((h) => h.host === e.host)));
  }
  return actors;
}
