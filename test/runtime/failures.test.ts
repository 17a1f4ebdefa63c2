/** Lost peers, hung peers, bad frames, bad tokens: typed failures, fast, and the node survives. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import WebSocket from 'ws';
import { MicroserveError } from '../../common/errors.ts';
import { ActorSystem } from '../../actors/runtime/system.ts';
import { killQuietly, startControl, startPeer, TOKEN, waitFor } from './helpers.ts';

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (e) {
    return (e as MicroserveError).code ?? String(e);
  }
}

test('SIGKILLed peer: pending query fails at once with CONNECTION_LOST; later queries fail fast', async () => {
  const control = await startControl();
  const peer = await startPeer(control.url!, 'peer-k', 'test/echo');
  try {
    const pending = control.ref('test/echo').query({ type: 'never' }, 20000);
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    peer.kill('SIGKILL');
    assert.is(await codeOf(pending), 'CONNECTION_LOST');
    assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
    const t1 = Date.now();
    assert.is(await codeOf(control.ref('test/echo').query({ type: 'echo' }, 10000)), 'ACTOR_NOT_FOUND');
    assert.ok(Date.now() - t1 < 1000);
  } finally {
    killQuietly(peer);
    await control.close();
  }
});

test('SIGSTOPped peer is seen as dead within 2 s (heartbeat), pending query fails', async () => {
  const control = await startControl();
  const peer = await startPeer(control.url!, 'peer-s', 'test/echo');
  const gone: string[] = [];
  control.onActorGone((p) => gone.push(p));
  try {
    const pending = control.ref('test/echo').query({ type: 'never' }, 30000);
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    peer.kill('SIGSTOP');
    assert.is(await codeOf(pending), 'CONNECTION_LOST');
    const dt = Date.now() - t0;
    assert.ok(dt <= 2000, `noticed after ${dt} ms`);
    assert.ok(gone.includes('test/echo'));
  } finally {
    killQuietly(peer, 'SIGKILL');
    await control.close();
  }
});

test('a block of our own event loop longer than the deadline does not make a live peer dead', async () => {
  const control = await startControl();
  // the peer is lenient with control's silence: only control's own judgement is under test
  const peer = await startPeer(control.url!, 'peer-b', 'test/echo', 30000);
  const gone: string[] = [];
  control.onActorGone((p) => gone.push(p));
  try {
    await control.ref('test/echo').query({ type: 'echo', value: 1 }, 5000);
    const end = performance.now() + 2500; // > deadAfterMs (1600): the peer's pings wait unread meanwhile
    while (performance.now() < end) {
      /* blocked */
    }
    await new Promise((r) => setTimeout(r, 1200)); // three heartbeat ticks after the block
    assert.equal(gone, [], 'the peer was declared dead over our own block');
    const r = await control.ref('test/echo').query<any>({ type: 'echo', value: 2 }, 5000);
    assert.is(r.value, 2);
  } finally {
    killQuietly(peer);
    await control.close();
  }
});

test('a node rejoins after control restarts; queries flow again', async () => {
  const control = await startControl();
  const port = Number(new URL(control.url!).port);
  const peer = await startPeer(control.url!, 'peer-r', 'test/echo');
  try {
    await control.close();
    const control2 = await ActorSystem.start({ nodeId: 'control', token: TOKEN, listen: { host: '127.0.0.1', port } });
    try {
      await waitFor(() => control2.listActors().some((a) => a.path === 'test/echo'), 8000);
      const r = await control2.ref('test/echo').query<any>({ type: 'echo', value: 7 }, 2000);
      assert.is(r.value, 7);
    } finally {
      await control2.close();
    }
  } finally {
    killQuietly(peer);
  }
});

test('unauthenticated connection is refused with 401; a wrong token too', async () => {
  const control = await startControl();
  try {
    for (const headers of [{}, { authorization: 'Bearer wrong' }]) {
      const status = await new Promise<number>((resolve) => {
        const ws = new WebSocket(control.url!, { headers });
        ws.on('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () => resolve(101));
        ws.on('error', () => resolve(-1));
      });
      assert.is(status, 401);
    }
    await assert.is(
      await codeOf(ActorSystem.start({ nodeId: 'intruder', token: 'nope', controlUrl: control.url!, listen: null })),
      'UNAUTHORIZED',
    );
  } finally {
    await control.close();
  }
});

test('malformed and oversized frames close only their connection', async () => {
  const control = await ActorSystem.start({ nodeId: 'control', token: TOKEN, listen: { host: '127.0.0.1', port: 0 }, maxFrameBytes: 1 << 20 });
  control.spawn('test/echo', (m: any) => m);
  const good = await ActorSystem.start({ nodeId: 'good', token: TOKEN, controlUrl: control.url!, listen: null });
  try {
    const closeCode = (payload: Buffer | string) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(control.url!, { headers: { authorization: `Bearer ${TOKEN}` } });
        ws.on('open', () => ws.send(payload));
        ws.on('close', (code) => resolve(code));
      });
    assert.is(await closeCode(Buffer.from([0xc1, 0xff, 0x00])), 4400); // 0xc1 is never valid msgpack
    assert.is(await closeCode('{"k":"env"}'), 4400); // text frames are not allowed
    assert.is(await closeCode(Buffer.from([0x93, 1, 2, 3])), 4400); // valid msgpack, not an envelope
    assert.is(await closeCode(Buffer.alloc(2 << 20, 1)), 1009); // over maxFrameBytes
    const r = await good.ref('test/echo').query<any>({ type: 'still-here' }, 2000);
    assert.is(r.type, 'still-here');
  } finally {
    await good.close();
    await control.close();
  }
});

test('stopped actor: query fails with a typed error before its timeout', async () => {
  const control = await startControl();
  const peer = await startPeer(control.url!, 'peer-d', 'test/echo');
  const caller = await ActorSystem.start({ nodeId: 'c2', token: TOKEN, controlUrl: control.url!, listen: null });
  try {
    control.spawn('test/local', () => 1);
    control.stop('test/local');
    const t0 = Date.now();
    assert.is(await codeOf(caller.ref('test/local').query({ type: 'x' }, 10000)), 'ACTOR_NOT_FOUND');
    assert.is(await codeOf(control.ref('test/local').query({ type: 'x' }, 10000)), 'ACTOR_STOPPED');
    assert.ok(Date.now() - t0 < 1000);
  } finally {
    killQuietly(peer);
    await caller.close();
    await control.close();
  }
});

test.run();
