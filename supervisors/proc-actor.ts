/**
 * `proc/<nodeId>`: the admin actor of a cluster process (engine processes, agents), through which
 * `control` reaches the actors hosted there. Messages (queries):
 * - `pid` → `{ pid, nodeId }`;
 * - `stop_actor {path}` → `{ stopped }`: kills the actor as a crash would (it comes back under
 *   the restart policy; `microserve kill <path>`);
 * - `restart_actor {path}` → `{ restarted }`: brings it back now (`microserve restart <path>`);
 * - `supervision` → `{ pid, actors: ActorSupervision[] }`;
 * - `exit` → `{ exiting: true }`, then the process shuts down (code 0).
 */
import { MicroserveError } from '../common/errors.ts';
import type { ActorSystemApi } from '../actors/runtime/types.ts';

export const procPath = (nodeId: string) => `proc/${nodeId}`;

function actorPath(system: ActorSystemApi, msg: { path?: unknown }): string {
  if (typeof msg.path !== 'string') throw new MicroserveError('BAD_MESSAGE', `${msg && (msg as any).type} needs a path (string)`, { field: 'path' });
  if (!system.supervision().some((a) => a.path === msg.path)) throw new MicroserveError('ACTOR_NOT_FOUND', `no actor at '${msg.path}' on node '${system.nodeId}'`);
  return msg.path;
}

export function spawnProcActor(system: ActorSystemApi, onExit: () => void): void {
  system.spawn(procPath(system.nodeId), (msg: any) => {
    switch (msg?.type) {
      case 'pid':
        return { pid: process.pid, nodeId: system.nodeId };
      case 'stop_actor': {
        const path = actorPath(system, msg);
        system.kill(path, 'killed');
        return { stopped: path };
      }
      case 'restart_actor': {
        const path = actorPath(system, msg);
        system.restart(path);
        return { restarted: path };
      }
      case 'supervision':
        return { pid: process.pid, actors: system.supervision() };
      case 'exit':
        setTimeout(onExit, 10);
        return { exiting: true };
      default:
        throw new MicroserveError('BAD_MESSAGE', `proc actor: unknown message type '${msg?.type}'`);
    }
  });
}
