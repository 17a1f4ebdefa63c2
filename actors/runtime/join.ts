/**
 * Joining a control plane that may not listen yet: an agent started before `up`, or a process
 * (re)started while `up` itself restarts. Retries while the control URL cannot be reached
 * (CONNECTION_LOST), backoff 250 ms doubling to 2 s, for at most `waitMs`; any other failure
 * (a wrong token: UNAUTHORIZED) is thrown at once.
 */
import { MicroserveError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import { ActorSystem, type SystemOptions } from './system.ts';

/** Starts the node `opts` describes, retrying for up to `waitMs` [0: one try] while control is unreachable. */
export async function startWhenReachable(opts: SystemOptions, waitMs: number): Promise<ActorSystem> {
  const deadline = Date.now() + waitMs;
  for (let delay = 250; ; delay = Math.min(2 * delay, 2000)) {
    try {
      return await ActorSystem.start(opts);
    } catch (e) {
      const isUnreachable = e instanceof MicroserveError && e.code === 'CONNECTION_LOST';
      if (!isUnreachable || Date.now() + delay > deadline) throw e;
      log.info('control plane not reachable yet; retrying', { url: opts.controlUrl, inMs: delay });
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
