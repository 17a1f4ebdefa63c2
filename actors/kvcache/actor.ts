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
import { KvActorMsgSchema, messageParser } from '../messages.ts';
import type { ActorRef, ActorSystemApi } from '../runtime/types.ts';
import type { KvCacheManager } from './manager.ts';

export type { KvActorMsg } from '../messages.ts';

export function spawnKvActor(system: ActorSystemApi, name: string, manager: KvCacheManager): ActorRef {
  const parse = messageParser(`kv/${name}`, KvActorMsgSchema);
  return system.spawn(`kv/${name}`, (raw: unknown) => {
    const msg = parse(raw);
    switch (msg.type) {
      case 'status':
        return { ...manager.stats(), numEvictedPages: manager.numEvictedPages, pageSize: manager.pageSize };
      case 'check':
        manager.checkIntegrity();
        return { ok: true, stats: manager.stats() };
      case 'match':
        return { matchedLen: manager.match(msg.promptIds).matchedLen };
    }
  });
}
