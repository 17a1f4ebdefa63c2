/**
 * Two nodes that dial each other at the same moment (engines starting their first KV transfers to
 * each other) end up with two connections. Both must keep the same one, and the other must stay
 * open until the replies already on their way came back on it: every query in flight gets its
 * reply. (Before: each node kept its newest and closed the other, so both connections died; a
 * query whose connection was not the node's current one then waited out its timeout, which is how
 * a KV transfer stalled 30 s during a hot reload, test/cli/reload.test.ts.)
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ActorSystem } from '../../actors/runtime/system.ts';
import { startControl, TOKEN } from './helpers.ts';

const slow = () => new Promise((r) => setTimeout(() => r({ ok: true }), 300));

test('crossing connections: both nodes keep one, every query in flight gets its reply', async () => {
  const control = await startControl();
  const join = (nodeId: string) => ActorSystem.start({ nodeId, token: TOKEN, controlUrl: control.url!, listen: { host: '127.0.0.1', port: 0 } });
  const nodes: ActorSystem[] = [];
  try {
    for (let round = 0; round < 5; round++) {
      const a = await join(`a${round}`);
      const b = await join(`b${round}`);
      nodes.push(a, b);
      a.spawn(`test/a${round}`, slow);
      b.spawn(`test/b${round}`, slow);
      await new Promise((r) => setTimeout(r, 200)); // the directory reached both
      const t0 = Date.now();
      // both dial at once: a -> b and b -> a, each with queries in flight
      const qs = [
        ...Array.from({ length: 4 }, () => a.ref(`test/b${round}`).query({ type: 'x' }, 20_000)),
        ...Array.from({ length: 4 }, () => b.ref(`test/a${round}`).query({ type: 'x' }, 20_000)),
      ];
      const outcomes = await Promise.all(qs.map((q) => q.then(() => 'ok', (e) => e.code as string)));
      const dt = Date.now() - t0;
      assert.ok(dt < 5000, `round ${round}: queries took ${dt} ms (${outcomes.join(' ')})`);
      assert.equal(outcomes, Array(8).fill('ok'), `round ${round}`);
      // and the nodes still talk afterwards
      assert.equal(await a.ref(`test/b${round}`).query({ type: 'x' }, 5000), { ok: true });
      assert.equal(await b.ref(`test/a${round}`).query({ type: 'x' }, 5000), { ok: true });
    }
  } finally {
    for (const n of nodes) await n.close();
    await control.close();
  }
});

test.run();
