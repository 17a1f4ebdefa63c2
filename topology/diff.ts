/**
 * What changes between two topologies, sorted by what applying it costs:
 * - in place, no process touched: role changes, strategy (and params) changes;
 * - spawn / drain-and-stop: engines added / removed (matched by name);
 * - restart (drain, stop, start again; weights reload): an engine whose process was started with
 *   something that changed: device, host, kvPages, pageSize, maxBatchTokens, maxNumSeqs,
 *   gpuMemoryUtilization, threads, grammarWorkers, the model,
 *   the transport; and with `transport: nvshmem`, an engine whose NVSHMEM job changed members
 *   (a job = the GPU engines of one host; membership is fixed when its processes start);
 * - router listener changes (host, port, apiKey) and control changes: not applicable by a hot
 *   reload; reported so the caller can refuse or warn.
 */
import type { Role } from '../actors/messages.ts';
import type { EngineSpec, Topology } from './types.ts';

export interface RoleChange {
  name: string;
  from: Role;
  to: Role;
}

export interface StrategyChange {
  from: { strategy: string; params: Record<string, unknown> };
  to: { strategy: string; params: Record<string, unknown> };
}

export interface RestartChange {
  /** The engine's spec in the new topology. */
  spec: EngineSpec;
  /** Why, e.g. `device cpu → cuda:0`, `nvshmem membership`. */
  reasons: string[];
}

export interface TopologyDiff {
  roleChanges: RoleChange[];
  strategyChange: StrategyChange | null;
  added: EngineSpec[];
  removed: EngineSpec[];
  restart: RestartChange[];
  /** Router listener fields that changed (`host`, `port`, `apiKey`, `maxQueue`): need the router restarted. */
  routerChanges: string[];
  /** Control-plane fields that changed: need `microserve up` restarted. */
  controlChanges: string[];
  /** True when nothing at all differs. */
  isEmpty: boolean;
}

const PROCESS_FIELDS = ['device', 'host', 'kvPages', 'pageSize', 'maxBatchTokens', 'maxNumSeqs', 'gpuMemoryUtilization', 'threads', 'grammarWorkers'] as const;

/** Compares `old` with `next` (both loaded by load.ts). Pure. */
export function diffTopology(old: Topology, next: Topology): TopologyDiff {
  const before = new Map(old.engines.map((e) => [e.name, e]));
  const after = new Map(next.engines.map((e) => [e.name, e]));
  const added = next.engines.filter((e) => !before.has(e.name));
  const removed = old.engines.filter((e) => !after.has(e.name));
  const kept = next.engines.filter((e) => before.has(e.name));

  const roleChanges: RoleChange[] = kept.filter((e) => before.get(e.name)!.role !== e.role).map((e) => ({ name: e.name, from: before.get(e.name)!.role, to: e.role }));

  const restart: RestartChange[] = [];
  const oldJobs = nvshmemJobs(old);
  const newJobs = nvshmemJobs(next);
  for (const e of kept) {
    const o = before.get(e.name)!;
    const reasons: string[] = PROCESS_FIELDS.filter((f) => o[f] !== e[f]).map((f) => `${f} ${o[f] ?? '(default)'} → ${e[f] ?? '(default)'}`);
    if (old.model !== next.model) reasons.push(`model ${old.model} → ${next.model}`);
    if (old.transport !== next.transport) reasons.push(`transport ${old.transport} → ${next.transport}`);
    if (reasons.length === 0 && next.transport === 'nvshmem' && oldJobs.get(e.name) !== newJobs.get(e.name)) {
      reasons.push(`nvshmem membership ${oldJobs.get(e.name) ?? '(none)'} → ${newJobs.get(e.name) ?? '(none)'}`);
    }
    if (reasons.length > 0) restart.push({ spec: e, reasons });
  }

  const so = { strategy: old.router.strategy, params: old.router.params };
  const sn = { strategy: next.router.strategy, params: next.router.params };
  const strategyChange = so.strategy !== sn.strategy || !sameJson(so.params, sn.params) ? { from: so, to: sn } : null;
  const routerChanges = (['host', 'port', 'apiKey', 'maxQueue'] as const).filter((f) => old.router[f] !== next.router[f]);
  const controlChanges = (['host', 'port', 'maxFrameBytes'] as const).filter((f) => old.control[f] !== next.control[f]);
  // the order of engines is the plan order (ties in load go to the earlier one): it matters too
  const isReordered = old.engines.filter((e) => after.has(e.name)).some((e, i) => kept[i].name !== e.name);
  const isEmpty =
    roleChanges.length + added.length + removed.length + restart.length + routerChanges.length + controlChanges.length === 0 &&
    !strategyChange &&
    !isReordered &&
    sameJson(old.hosts, next.hosts);
  return { roleChanges, strategyChange, added, removed, restart, routerChanges, controlChanges, isEmpty };
}

/**
 * NVSHMEM job of every GPU engine: one job per host, named by its sorted members
 * (`local:d0@cuda:0,p0@cuda:0`). Comparing names tells whether an engine's job changed members.
 */
export function nvshmemJobs(t: Topology): Map<string, string> {
  const byHost = new Map<string, EngineSpec[]>();
  for (const e of t.engines) {
    if (!e.device.startsWith('cuda:')) continue;
    byHost.set(e.host, [...(byHost.get(e.host) ?? []), e]);
  }
  const jobs = new Map<string, string>();
  for (const [host, engines] of byHost) {
    const id = `${host}:${engines.map((e) => `${e.name}@${e.device}`).sort().join(',')}`;
    for (const e of engines) jobs.set(e.name, id);
  }
  return jobs;
}

/** One line per change, for reports and `status`. */
export function describeDiff(d: TopologyDiff): string[] {
  const out: string[] = [];
  for (const e of d.added) out.push(`+ engine ${e.name} (${e.role}, ${e.device}${e.host !== 'local' ? ` on ${e.host}` : ''})`);
  for (const e of d.removed) out.push(`- engine ${e.name} (drained, stopped)`);
  for (const r of d.roleChanges) out.push(`engine ${r.name}: role ${r.from} → ${r.to}`);
  for (const r of d.restart) out.push(`engine ${r.spec.name}: restart (${r.reasons.join(', ')})`);
  if (d.strategyChange) out.push(`strategy ${fmtStrategy(d.strategyChange.from)} → ${fmtStrategy(d.strategyChange.to)}`);
  for (const f of d.routerChanges) out.push(`router.${f} changed: needs the router restarted (not applied)`);
  for (const f of d.controlChanges) out.push(`control.${f} changed: needs \`microserve up\` restarted (not applied)`);
  return out;
}

function fmtStrategy(s: { strategy: string; params: Record<string, unknown> }): string {
  return Object.keys(s.params).length > 0 ? `${s.strategy} ${JSON.stringify(s.params)}` : s.strategy;
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).sort(([a], [b]) => a.localeCompare(b)).map(([k, x]) => [k, sortKeys(x)]));
  return v;
}
