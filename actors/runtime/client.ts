/**
 * Client API for scripts and the CLI: join a running cluster as a client node (no server of
 * its own; control relays its traffic) and message any actor.
 *
 * ```ts
 * const c = await connect('ws://127.0.0.1:7700', { token });
 * const st = await c.ref('engine/e0').query({ type: 'status' }, 2000);
 * await c.close();
 * ```
 */
import { randomBytes } from 'node:crypto';
import { MicroserveError } from '../../common/errors.ts';
import { readRunFile, resolveToken } from './token.ts';
import { ActorSystem } from './system.ts';
import { env } from '../../common/env.ts';

export interface ConnectOptions {
  /** [token] cluster token; default: MICROSERVE_TOKEN, else the run file written by `up`. */
  token?: string;
  /** [nodeId] default `client-<pid>-<random>`. */
  nodeId?: string;
}

export async function connect(url?: string, opts: ConnectOptions = {}): Promise<ActorSystem> {
  const controlUrl = url ?? env('controlUrl') ?? readRunFile()?.controlUrl;
  if (!controlUrl) throw new MicroserveError('CONNECTION_LOST', 'no cluster to connect to: start one with `microserve up` or pass --control <url>');
  const token = opts.token ?? resolveToken();
  if (!token) throw new MicroserveError('UNAUTHORIZED', 'no cluster token: set MICROSERVE_TOKEN or run `microserve up` first');
  return ActorSystem.start({
    nodeId: opts.nodeId ?? `client-${process.pid}-${randomBytes(3).toString('hex')}`,
    token,
    controlUrl,
    listen: null,
  });
}
