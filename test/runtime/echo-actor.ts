/** The test actor used by the shared suite: echo, delays, typed errors, crashes. */
import { MicroserveError } from '../../common/errors.ts';
import type { ActorSystemApi } from '../../actors/runtime/types.ts';

export function spawnEcho(system: ActorSystemApi, path: string) {
  const recorded: number[] = [];
  return system.spawn(path, (msg: any) => {
    switch (msg.type) {
      case 'echo':
        return msg;
      case 'slow-echo':
        return new Promise((r) => setTimeout(() => r(msg), msg.ms));
      case 'fail':
        throw new MicroserveError(msg.code, 'asked to fail');
      case 'crash':
        throw new Error('boom');
      case 'never':
        return new Promise(() => {});
      case 'record':
        recorded.push(msg.value);
        return;
      case 'recorded':
        return { values: recorded };
      case 'pid':
        return { pid: process.pid };
      default:
        throw new MicroserveError('BAD_MESSAGE', `unknown type ${msg.type}`);
    }
  });
}
