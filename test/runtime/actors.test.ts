import { ActorSystem } from '../../actors/runtime/system.ts';
import { spawnEcho } from './echo-actor.ts';
import { killQuietly, startControl, startPeer, TOKEN } from './helpers.ts';
import { actorSuite } from './shared-suite.ts';

actorSuite('local refs', async () => {
  const sys = await ActorSystem.start({ nodeId: 'solo', token: TOKEN, listen: null });
  spawnEcho(sys, 'test/echo');
  return { caller: sys, echo: 'test/echo', teardown: () => sys.close() };
}).run();

/** Echo in a child process; the caller is another node, with a server of its own or without. */
async function remoteFixture(peerId: string, callerId: string, hasServer: boolean) {
  const control = await startControl();
  const peer = await startPeer(control.url!, peerId, 'test/echo');
  const caller = await ActorSystem.start({ nodeId: callerId, token: TOKEN, controlUrl: control.url!, listen: hasServer ? { host: '127.0.0.1', port: 0 } : null });
  return {
    caller,
    echo: 'test/echo',
    teardown: async () => {
      killQuietly(peer);
      await caller.close();
      await control.close();
    },
  };
}

actorSuite('remote refs across processes (direct ws)', () => remoteFixture('peer-a', 'caller', true)).run();

actorSuite('remote refs relayed by control (client without a server)', () => remoteFixture('peer-b', 'client-x', false)).run();
