/**
 * Applying a new topology to a running cluster with zero failed requests. The caller (the control
 * actor) supplies the hooks that touch processes and the router; this module only decides the
 * order and measures it:
 *   1. spawn added engines, wait until each answers (ready);
 *   2. set changed roles in place (engines keep running, weights stay loaded);
 *   3. with engines to restart: an interim plan without them (when others remain), then each is
 *      drained, stopped and started again, one at a time;
 *   4. hand the router the new plan and wait for its ack: new requests use it, requests in flight
 *      finish under the old one. `reconfigureMs` ends here (reconfiguration time: from receipt of the new
 *      topology to the router's ack; drain excluded);
 *   5. drain, then stop removed engines (`drainMs`).
 * A failure before step 4 rolls back for real and rethrows, so the old topology keeps serving:
 * roles set back, spawned engines stopped, restarted engines started again with their previous
 * spec, and the router handed the old plan again. A hook that starts an engine fails as soon as
 * the engine's process exits while starting, or after its ready timeout (see supervisors/up.ts). Router listener or control-plane changes are
 * refused up front (TOPOLOGY_INVALID): they need `microserve up` restarted.
 */
import { MicroserveError } from '../common/errors.ts';
import { log } from '../common/log.ts';
import type { Role } from '../actors/messages.ts';
import type { Plan } from '../actors/router/types.ts';
import { describeDiff, diffTopology, type TopologyDiff } from './diff.ts';
import type { EngineSpec, Topology } from './types.ts';

/** What applyTopology needs from the running system. Every hook is async and may throw. */
export interface ApplyHooks {
  /** Starts an engine process; resolves once the engine answers (ready to serve). */
  spawnEngine(spec: EngineSpec): Promise<void>;
  /** Changes a running engine's role in place. */
  setRole(name: string, role: Role): Promise<void>;
  /** Hands the router a plan; resolves on the router's ack (its return value goes in the report). */
  setPlan(plan: Plan): Promise<unknown>;
  /** Waits until the engine has no request in flight, then stops its process. */
  drainAndStop(name: string): Promise<void>;
  /**
   * Drains and stops the engine, starts it again with `spec`; resolves once it answers.
   * `isRollback`: `spec` is the engine's previous spec, under the current (old) topology.
   */
  restartEngine(spec: EngineSpec, isRollback?: boolean): Promise<void>;
}

export interface ApplyOptions {
  /** [version=1] version of the running topology; the report's is one more. */
  version?: number;
  /** [receivedAt=now() at the call] when the new topology was received (performance.now() ms). */
  receivedAt?: number;
  /** [now=performance.now] clock in ms. */
  now?: () => number;
}

export interface ApplyReport {
  /** Version of the topology now running (unchanged when nothing differed). */
  version: number;
  /** One line per change (describeDiff). */
  changes: string[];
  diff: TopologyDiff;
  /** From receipt to the router's ack of the new plan (0 when nothing changed). */
  reconfigureMs: number;
  /** Draining and stopping removed engines, after the ack (0 when none). */
  drainMs: number;
  /** Part of reconfigureMs spent spawning added engines. */
  spawnMs: number;
  /** Part of reconfigureMs spent restarting engines. */
  restartMs: number;
  /** The router's answer to setPlan. */
  planAck: unknown;
}

/** The router plan a topology describes (engines in file order). */
export function planOf(t: Topology, exclude: ReadonlySet<string> = new Set()): Plan {
  return {
    engines: t.engines.filter((e) => !exclude.has(e.name)).map((e) => ({ name: e.name, role: e.role })),
    strategy: t.router.strategy,
    params: { ...t.router.params },
  };
}

/** Applies `next` over `current` through `hooks` (see the module comment for the order). */
export async function applyTopology(current: Topology, next: Topology, hooks: ApplyHooks, opts: ApplyOptions = {}): Promise<ApplyReport> {
  const now = opts.now ?? (() => performance.now());
  const t0 = opts.receivedAt ?? now();
  const version = opts.version ?? 1;
  const diff = diffTopology(current, next);
  const changes = describeDiff(diff);
  const report: ApplyReport = { version, changes, diff, reconfigureMs: 0, drainMs: 0, spawnMs: 0, restartMs: 0, planAck: null };
  if (diff.isEmpty) return report;
  const fixed = [...diff.routerChanges.map((f) => `router.${f}`), ...diff.controlChanges.map((f) => `control.${f}`)];
  if (fixed.length > 0) {
    throw new MicroserveError('TOPOLOGY_INVALID', `${fixed.join(', ')} cannot change while running (restart \`microserve up\`); nothing was applied`, { field: fixed[0] });
  }

  const spawned: string[] = [];
  const rolesSet: { name: string; from: Role }[] = [];
  const restarted: EngineSpec[] = [];
  let isPlanSet = false;
  const undo = async (cause: unknown) => {
    log.warn('topology apply failed, rolling back', { error: cause as Error, spawned, rolesSet: rolesSet.map((r) => r.name), restarted: restarted.map((e) => e.name) });
    await Promise.allSettled(rolesSet.map((r) => hooks.setRole(r.name, r.from)));
    await Promise.allSettled(spawned.map((n) => hooks.drainAndStop(n)));
    // one at a time, like the restarts themselves; a failed rollback is logged, the cause rethrown
    for (const old of restarted) {
      await hooks.restartEngine(old, true).catch((e) => log.error('rollback: the engine did not come back with its previous spec', { engine: old.name, error: e as Error }));
    }
    if (isPlanSet) await hooks.setPlan(planOf(current)).catch((e) => log.error('rollback: the router did not take the previous plan', { error: e as Error }));
  };

  try {
    const ts = now();
    await Promise.all(
      diff.added.map(async (e) => {
        await hooks.spawnEngine(e);
        spawned.push(e.name);
      }),
    );
    report.spawnMs = now() - ts;
    const restarting = new Set(diff.restart.map((r) => r.spec.name));
    await Promise.all(
      diff.roleChanges
        .filter((r) => !restarting.has(r.name))
        .map(async (r) => {
          await hooks.setRole(r.name, r.to);
          rolesSet.push({ name: r.name, from: r.from });
        }),
    );
    if (diff.restart.length > 0) {
      const tr = now();
      const interim = planOf(next, restarting);
      if (interim.engines.some((e) => e.role !== 'prefill')) {
        await hooks.setPlan(interim);
        isPlanSet = true;
      }
      for (const r of diff.restart) {
        const old = current.engines.find((e) => e.name === r.spec.name);
        if (old) restarted.push(old);
        await hooks.restartEngine(r.spec);
      }
      report.restartMs = now() - tr;
    }
    report.planAck = await hooks.setPlan(planOf(next));
  } catch (e) {
    await undo(e);
    throw e;
  }
  report.version = version + 1;
  report.reconfigureMs = now() - t0;

  const td = now();
  const drained = await Promise.allSettled(diff.removed.map((e) => hooks.drainAndStop(e.name)));
  report.drainMs = diff.removed.length > 0 ? now() - td : 0;
  drained.forEach((r, i) => {
    if (r.status === 'rejected') log.error('removed engine did not stop cleanly', { engine: diff.removed[i].name, error: r.reason as Error });
  });
  log.info('topology applied', { version: report.version, changes, reconfigureMs: +report.reconfigureMs.toFixed(3), drainMs: +report.drainMs.toFixed(3) });
  return report;
}
