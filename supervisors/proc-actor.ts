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
import { messageParser, ProcMsgSchema } from '../actors/messages.ts';
import type { ActorSystemApi } from '../actors/runtime/types.ts';

export const procPath = (nodeId: string) => `proc/${nodeId}`;

function actorPath(system: ActorSystemApi, msg: { path: string }): string {
  if (!system.supervision().some((a) => a.path === msg.path)) throw new MicroserveError('ACTOR_NOT_FOUND', `no actor at '${msg.path}' on node '${system.nodeId}'`);
  return msg.path;
}

export function spawnProcActor(system: ActorSystemApi, onExit: () => void): void {
  // a malformed message is refused with BAD_MESSAGE naming the field, before any use
  const parse = messageParser(procPath(system.nodeId), ProcMsgSchema);
  system.spawn(procPath(system.nodeId), (raw: unknown) => {
    const msg = parse(raw);
    switch (msg.type) {
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
    }
  });
}
