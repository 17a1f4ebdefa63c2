/**
 * The cluster's real state, read from its supervisors (never from the last plan): which process
 * hosts each actor (node supervisors' ProcStatus), whether each actor runs (the hosting node's
 * actor supervision, `proc/<nodeId>` `supervision`), restarts, last exit and why a part failed.
 * Also finds where a path lives, for `kill` and `restart`.
 */
import { MicroserveError } from '../common/errors.ts';
import type { EngineStatus } from '../actors/messages.ts';
import type { ActorSupervision, ActorSystemApi } from '../actors/runtime/types.ts';
import { procPath } from './proc-actor.ts';
import type { ProcStatus } from './proc-spec.ts';

export interface ActorStatus {
  path: string;
  kind: string;
  role: string | null;
  host: string;
  pid: number | null;
  /** Times the actor came back: its own restarts plus its process's. */
  restarts: number;
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

export interface HostProcs {
  host: string;
  /** null: the host's supervisor did not answer. */
  pid: number | null;
  procs: ProcStatus[];
}

/** Asks each host's `supervisor/<host>` for its processes (2 s each, in parallel). */
export async function readHosts(system: ActorSystemApi, hosts: string[]): Promise<HostProcs[]> {
  return Promise.all(
    hosts.map((host) =>
      system
        .ref(`supervisor/${host}`)
        .query<{ pid: number; procs: ProcStatus[] }>({ type: 'status' }, 2000)
        .then((r) => ({ host, pid: r.pid, procs: r.procs }))
        .catch(() => ({ host, pid: null, procs: [] })),
    ),
  );
}

/** Where `path` lives: the node hosting it and, when a node supervisor runs that node, its host. */
export function locate(system: ActorSystemApi, hosts: HostProcs[], path: string): { nodeId: string; supHost: string | null; proc?: ProcStatus } {
  if (system.supervision().some((a) => a.path === path)) return { nodeId: system.nodeId, supHost: null };
  for (const h of hosts) for (const p of h.procs) if (p.paths.includes(path) || procPath(p.nodeId) === path) return { nodeId: p.nodeId, supHost: h.host, proc: p };
  const entry = system.listActors().find((a) => a.path === path);
  if (entry) {
    for (const h of hosts) for (const p of h.procs) if (p.nodeId === entry.nodeId) return { nodeId: p.nodeId, supHost: h.host, proc: p };
    return { nodeId: entry.nodeId, supHost: null };
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

/**
 * One row per actor: the control node's own actors, each host's supervisor, and the actors of
 * every supervised process (with the process's pid, state and restarts folded in).
 */
export async function readActors(system: ActorSystemApi, hosts: HostProcs[], roleOf: (name: string) => string | null): Promise<ActorStatus[]> {
  const actors: ActorStatus[] = system.supervision().filter((a) => !a.path.startsWith('proc/')).map((a) => row(a, 'local', process.pid, system.nodeId));
  const known = new Set(system.listActors().map((a) => a.path));
  for (const h of hosts) {
    if (h.host === 'local') continue;
    const path = `supervisor/${h.host}`;
    const entry = system.listActors().find((a) => a.path === path);
    const sup = entry ? await system.ref(procPath(entry.nodeId)).query<{ actors: ActorSupervision[] }>({ type: 'supervision' }, 1500).catch(() => null) : null;
    const own = sup?.actors.find((a) => a.path === path);
    if (own) actors.push(row(own, h.host, h.pid, entry!.nodeId));
    else actors.push({ path, kind: 'supervisor', role: null, host: h.host, pid: h.pid, restarts: 0, state: h.pid ? 'running' : 'starting', nodeId: entry?.nodeId ?? '-' });
  }
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
      const procExit = p.lastExit ? { reason: `process exited (code ${p.lastExit.code}, signal ${p.lastExit.signal})`, at: p.lastExit.at } : undefined;
      const lastExit = later(procExit, a?.lastExit);
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
  return actors;
}
