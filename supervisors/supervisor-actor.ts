/**
 * `supervisor/<host>`: the actor face of a NodeSupervisor, so `up` drives local and remote
 * hosts the same way. Messages: start {spec}, stop {nodeId}, kill {nodeId}, restart {nodeId}, status.
 */
import { messageParser, SupervisorMsgSchema } from '../actors/messages.ts';
import type { ActorSystemApi } from '../actors/runtime/types.ts';
import type { NodeSupervisor } from './node-supervisor.ts';

export type { SupervisorMsg } from '../actors/messages.ts';

export function spawnSupervisorActor(system: ActorSystemApi, host: string, sup: NodeSupervisor) {
  // a bad spec (`{"type":"start","spec":5}`) is refused here, before the supervisor sees it
  const parse = messageParser(`supervisor/${host}`, SupervisorMsgSchema);
  return system.spawn(`supervisor/${host}`, (raw: unknown) => {
    const msg = parse(raw);
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
    }
  });
}
