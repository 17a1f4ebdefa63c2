/** A supervised test process: `start` hosts an echo actor; args.crashAfterMs makes it crash-loop. */
import type { ActorSystemApi } from '../../actors/runtime/types.ts';
import { spawnEcho } from './echo-actor.ts';

export function start(system: ActorSystemApi, args: { path: string; crashAfterMs?: number }) {
  spawnEcho(system, args.path);
  if (args.crashAfterMs !== undefined) setTimeout(() => process.exit(3), args.crashAfterMs);
}
