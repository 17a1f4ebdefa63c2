import { ActorSystem } from '../../actors/runtime/system.ts';
import { spawnEcho } from './echo-actor.ts';
import { killQuietly, startControl, startPeer, TOKEN } from './helpers.ts';
import { actorSuite } from './shared-suite.ts';

actorSuite('local refs', async () => {
  const sys = await ActorSystem.start({ nodeId: 'solo', token: TOKEN, listen: null });
  spawnEcho(sys, 'test/echo');
  return { caller: sys, echo: 'test/echo', teardown: () => sys.close() };
}).run();

actorSuite('remote refs across processes (direct ws)', async () => {
  const control = await startControl();
  const peer = await startPeer(control.url!, 'peer-a', 'test/echo');
  const caller = await ActorSystem.start({ nodeId: 'caller', token: TOKEN, controlUrl: control.url!, listen: { host: '127.0.0.1', port: 0 } });
  return {
    caller,
    echo: 'test/echo',
    teardown: async () => {
      killQuietly(peer);
      await caller.close();
      await control.close();
    },
  };
}).run();

actorSuite('remote refs relayed by control (client without a server)', async () => {
  const control = await startControl();
  const peer = await startPeer(control.url!, 'peer-b', 'test/echo');
  const caller = await ActorSystem.start({ nodeId: 'client-x', token: TOKEN, controlUrl: control.url!, listen: null });
  return {
    caller,
    echo: 'test/echo',
    teardown: async () => {
      killQuietly(peer);
      await caller.close();
      await control.close();
    },
  };
}).run();
