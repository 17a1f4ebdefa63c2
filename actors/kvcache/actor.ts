/**
 * `kv/<name>`: the KV-cache manager of engine `<name>` as an actor, for scripts, the router and
 * tests. Read-only: the engine mutates the manager synchronously in its own process.
 *
 * Messages (all queries):
 * - `{ type: 'status' }` → KvPageStats plus `numEvictedPages`;
 * - `{ type: 'check' }` → `{ ok: true, stats }`, or a crash naming the failed equation;
 * - `{ type: 'match', promptIds }` → `{ matchedLen }` (tokens, a multiple of pageSize).
 */
import { MicroserveError } from '../../common/errors.ts';
import type { ActorRef, ActorSystemApi } from '../runtime/types.ts';
import type { KvCacheManager } from './manager.ts';

export type KvActorMsg = { type: 'status' } | { type: 'check' } | { type: 'match'; promptIds: number[] };

export function spawnKvActor(system: ActorSystemApi, name: string, manager: KvCacheManager): ActorRef {
  return system.spawn(`kv/${name}`, (msg: KvActorMsg) => {
    switch (msg?.type) {
      case 'status':
        return { ...manager.stats(), numEvictedPages: manager.numEvictedPages, pageSize: manager.pageSize };
      case 'check':
        manager.checkIntegrity();
        return { ok: true, stats: manager.stats() };
      case 'match':
        if (!Array.isArray(msg.promptIds)) throw new MicroserveError('BAD_MESSAGE', 'match: promptIds must be an array of token ids');
        return { matchedLen: manager.match(msg.promptIds).matchedLen };
      default:
        throw new MicroserveError('BAD_MESSAGE', `kv/${name}: unknown message type '${(msg as any)?.type}'`);
    }
  });
}
