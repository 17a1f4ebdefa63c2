/**
 * The agent process of `microserve agent`: the node supervisor of one host. It runs as a supervised
 * process (process-main.ts, node `agent-<host>`) under the agent's keeper (agent-keeper.ts), which
 * restarts it with backoff when it dies. It hosts `supervisor/<host>` and runs the engines control
 * starts there (control starts them whenever `supervisor/<host>` registers: supervisors/cluster.ts
 * `reconcileHost`). Its engines hold an IPC channel to it and exit when it dies, so after a restart
 * they are started again, fresh.
 *
 * Control plane lost (`up` killed or restarting): the engines keep running for `controlGraceMs`,
 * so a restarted `up` on the same control address and token adopts them with their weights
 * loaded; past it they are stopped (nothing is left running for a cluster that is gone) and this
 * process keeps trying to rejoin; control starts them again when it is back.
 */
import { z } from 'zod';
import { env } from '../common/env.ts';
import { MicroserveError } from '../common/errors.ts';
import { log } from '../common/log.ts';
import type { ActorSystem } from '../actors/runtime/system.ts';
import { NodeSupervisor } from './node-supervisor.ts';
import { spawnSupervisorActor } from './supervisor-actor.ts';

/** How often the worker looks at its control connection. */
const CONTROL_CHECK_MS = 500;

export const AgentWorkerArgsSchema = z.strictObject({
  /** Host name as written in the topology. */
  host: z.string().min(1).max(128),
  /** Address the engines listen on for engine-to-engine traffic. */
  bind: z.string().min(1).max(256),
  /** How long the engines outlive a lost control plane, in ms. */
  controlGraceMs: z.number().int().min(0),
});
export type AgentWorkerArgs = z.infer<typeof AgentWorkerArgsSchema>;

/** process-main.ts calls this with the spec's args (written by the keeper). */
export function start(system: ActorSystem, raw: unknown): { close(): Promise<void> } {
  const parsed = AgentWorkerArgsSchema.safeParse(raw);
  if (!parsed.success) throw new MicroserveError('BAD_CONFIG', `agent worker args: ${parsed.error.issues[0].path.join('.')}: ${parsed.error.issues[0].message}`);
  const a = parsed.data;
  const sup = new NodeSupervisor(system, { host: a.host, controlUrl: env('controlUrl')!, token: env('token')!, env: { MICROSERVE_BIND: a.bind } });
  spawnSupervisorActor(system, a.host, sup);
  const watch = watchControl(system, a.controlGraceMs, () => {
    const live = sup.status().filter((p) => p.state !== 'stopped');
    if (live.length === 0) return;
    log.warn('control plane unreachable: stopping this host\'s engines (control starts them again when it is back)', { graceMs: a.controlGraceMs, procs: live.map((p) => p.nodeId).join(' ') });
    void sup.stopAll();
  });
  return {
    close: async () => {
      clearInterval(watch);
      await sup.stopAll();
    },
  };
}

/** Calls `onLost` once control has been unreachable for `graceMs` (again after each reconnection). */
function watchControl(system: ActorSystem, graceMs: number, onLost: () => void): NodeJS.Timeout {
  let lastSeen = Date.now();
  let isLost = false;
  const t = setInterval(() => {
    if (system.connectedNodes().includes('control')) {
      lastSeen = Date.now();
      isLost = false;
    } else if (!isLost && Date.now() - lastSeen > graceMs) {
      isLost = true;
      onLost();
    }
  }, CONTROL_CHECK_MS);
  t.unref();
  return t;
}
