/**
 * `supervisor/<host>`: the actor face of a NodeSupervisor, so `up` drives local and remote
 * hosts the same way. Messages: start {spec}, stop {nodeId}, kill {nodeId}, restart {nodeId}, status.
 */
import { MicroserveError } from '../common/errors.ts';
import type { ActorSystemApi } from '../actors/runtime/types.ts';
import type { NodeSupervisor } from './node-supervisor.ts';
import type { ProcSpec } from './proc-spec.ts';

export type SupervisorMsg =
  | { type: 'start'; spec: ProcSpec }
  | { type: 'stop'; nodeId: string; graceMs?: number }
  | { type: 'kill'; nodeId: string }
  | { type: 'restart'; nodeId: string }
  | { type: 'status' };

export function spawnSupervisorActor(system: ActorSystemApi, host: string, sup: NodeSupervisor) {
  return system.spawn(`supervisor/${host}`, (msg: SupervisorMsg) => {
    switch (msg.type) {
      case 'start':
        return sup.start(msg.spec);
      case 'stop':
        return sup.stop(msg.nodeId, msg.graceMs).then(() => ({ stopped: msg.nodeId }));
      case 'kill':
        return { killed: sup.kill(msg.nodeId) };
      case 'restart':
        return { restarted: sup.restart(msg.nodeId) };
      case 'status':
        return { host, pid: process.pid, procs: sup.status() };
      default:
        throw new MicroserveError('BAD_MESSAGE', `supervisor: unknown message type '${(msg as any)?.type}'`);
    }
  });
}
