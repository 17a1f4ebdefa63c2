/**
 * Frames at the boundary: one schema per kind (decodeFrame), the protocol order (frame-rules),
 * and a real control node that closes only the offending connection with 4400 + a reason that
 * starts with BAD_FRAME and names the field, and keeps serving.
 */
import { Packr } from 'msgpackr';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import WebSocket from 'ws';
import { MicroserveError } from '../../common/errors.ts';
import { decodeFrame, encodeFrame, FRAME_KINDS } from '../../actors/runtime/frames.ts';
import { ActorSystem } from '../../actors/runtime/system.ts';
import { TOKEN } from './helpers.ts';

const packr = new Packr({ useRecords: false, moreTypes: false, structuredClone: false });
const pack = (v: unknown) => packr.pack(v);

function badField(v: unknown): string {
  try {
    decodeFrame(pack(v));
  } catch (e) {
    assert.instance(e, MicroserveError);
    assert.is((e as MicroserveError).code, 'BAD_FRAME');
    return String((e as MicroserveError).info?.field);
  }
  throw new Error(`accepted ${JSON.stringify(v)}`);
}

test('every well-formed frame kind round-trips', () => {
  const frames = [
    { k: 'hello', nodeId: 'n1', url: null, paths: ['engine/e0'], join: true },
    { k: 'welcome', nodeId: 'control', directory: [['router', 'control', 'ws://127.0.0.1:1']] },
    { k: 'reg', add: [['kv/e0', 'n1', null]], remove: ['x/y'] },
    { k: 'dir', goneNodes: ['n2'] },
    { k: 'env', to: 'engine/e0', from: 'node/n1', id: 3, type: 'kv_write', body: { type: 'kv_write', data: new Uint8Array([1, 2]) } },
    { k: 'reply', to: 'node/n1', id: 3, error: { code: 'BAD_MESSAGE', message: 'x' } },
  ];
  assert.equal(frames.map((f) => f.k).sort(), [...FRAME_KINDS].sort());
  for (const f of frames) {
    const back = decodeFrame(encodeFrame(f as any)) as any;
    if (f.k === 'env') {
      assert.equal([...back.body.data], [1, 2]);
      back.body.data = (f as any).body.data;
    }
    assert.equal(back, f);
  }
});

test('each kind names its bad field', () => {
  assert.is(badField({ k: 'dir', add: 5 }), 'dir.add');
  assert.is(badField({ k: 'dir', goneNodes: [7] }), 'dir.goneNodes[0]');
  assert.is(badField({ k: 'hello', nodeId: 'a b', url: null, paths: [], join: true }), 'hello.nodeId');
  assert.is(badField({ k: 'hello', nodeId: 'a', url: null, paths: 'engine/e0', join: true }), 'hello.paths');
  assert.is(badField({ k: 'welcome', nodeId: 'c', directory: [['router', 'control']] }), 'welcome.directory[0]');
  assert.is(badField({ k: 'reg', add: [['../etc', 'n', null]] }), 'reg.add[0][0]');
  assert.is(badField({ k: 'env', to: 'engine/e0', from: 'node/n', id: -1, type: 't', body: {} }), 'env.id');
  assert.is(badField({ k: 'env', to: 'engine/e0', from: 'node/n', type: 't', body: [1] }), 'env.body');
  assert.is(badField({ k: 'env', to: 'engine/e0', from: 'node/n', type: 't', body: null }), 'env.body');
  assert.is(badField({ k: 'reply', to: 'node/n', id: 1.5 }), 'reply.id');
  assert.is(badField({ k: 'reply', to: 'node/n', id: 1, error: { code: 1 } }), 'reply.error.code');
  assert.is(badField({ k: 'nope' }), 'k');
  assert.is(badField([1, 2, 3]), 'k');
  assert.is(badField('text'), 'k');
  assert.is(badField({ k: 'dir', remove: new Array(70_000).fill('a/b') }), 'dir.remove'); // over MAX_LIST
  assert.throws(() => decodeFrame(Buffer.from([0xc1, 0xff, 0x00])), (e: MicroserveError) => e.code === 'BAD_FRAME' && /msgpack/.test(e.message));
});

/** A raw authenticated socket; resolves with the close code and reason after sending `frames`. */
function closeOf(url: string, frames: unknown[], hello = true): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${TOKEN}` } });
    const timer = setTimeout(() => reject(new Error('connection was not closed')), 20_000);
    ws.on('open', () => {
      if (hello) ws.send(pack({ k: 'hello', nodeId: `raw-${Math.random().toString(36).slice(2, 8)}`, url: null, paths: [], join: true }));
      for (const f of frames) ws.send(pack(f));
    });
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString() });
    });
    ws.on('error', () => undefined);
  });
}

test('a real control node: each bad frame closes its own connection with 4400 naming the field', async () => {
  const control = await ActorSystem.start({ nodeId: 'control', token: TOKEN, listen: { host: '127.0.0.1', port: 0 } });
  control.spawn('test/echo', (m: any) => m);
  const good = await ActorSystem.start({ nodeId: 'good', token: TOKEN, controlUrl: control.url!, listen: null });
  try {
    const cases: [unknown[], boolean, RegExp][] = [
      [[{ k: 'dir', add: 5 }], true, /^BAD_FRAME dir.add: /], // the frame: used to kill `up`
      [[{ k: 'dir', goneNodes: ['good'] }], true, /^BAD_FRAME k: 'dir' comes from control only/],
      [[{ k: 'env', to: 'test/echo', from: 'node/x', type: 'a', body: { type: 'a' } }], false, /^BAD_FRAME k: 'hello' must be the first frame/],
      [[{ k: 'env', to: 'test/echo', from: 'node/good', id: 1, type: 'a', body: { type: 'a' } }], true, /^BAD_FRAME env.from: /],
      [[{ k: 'hello', nodeId: 'control', url: null, paths: [], join: true }], false, /^BAD_FRAME hello.nodeId: /],
      [[{ k: 'welcome', nodeId: 'x', directory: [] }], true, /^BAD_FRAME k: 'welcome' after the greeting/],
    ];
    for (const [frames, hello, want] of cases) {
      const r = await closeOf(control.url!, frames, hello);
      assert.is(r.code, 4400, `${JSON.stringify(frames)}: ${r.code} ${r.reason}`);
      assert.match(r.reason, want);
    }
    // nothing was forgotten or hijacked; the good client still talks through control
    assert.ok(control.connectedNodes().includes('good'));
    const r = await good.ref('test/echo').query<any>({ type: 'still-here' }, 5000);
    assert.is(r.type, 'still-here');
  } finally {
    await good.close();
    await control.close();
  }
});

test('a joining node cannot take a path another live node holds; a stray reply settles nothing', async () => {
  const control = await ActorSystem.start({ nodeId: 'control', token: TOKEN, listen: { host: '127.0.0.1', port: 0 } });
  control.spawn('test/echo', (m: any) => m);
  control.spawn('control', () => 'control');
  const intruder = new WebSocket(control.url!, { headers: { authorization: `Bearer ${TOKEN}` } });
  try {
    await new Promise((r) => intruder.on('open', r));
    intruder.send(pack({ k: 'hello', nodeId: 'intruder', url: null, paths: ['test/echo', 'control'], join: true }));
    intruder.send(pack({ k: 'reg', add: [['router', 'intruder', null], ['test/mine', 'intruder', null]] }));
    await new Promise((r) => setTimeout(r, 300));
    const dir = new Map(control.listActors().map((a) => [a.path, a.nodeId]));
    assert.is(dir.get('test/echo'), 'control');
    assert.is(dir.get('control'), 'control');
    assert.is(dir.get('test/mine'), 'intruder');
    const r = await control.ref('test/echo').query<any>({ type: 'real' }, 5000);
    assert.is(r.type, 'real');
    // control queries the intruder's actor; another client forges replies to every likely id
    const waiting = control.ref('test/mine').query({ type: 'q' }, 1500).then(
      (v) => ({ settled: v }),
      (e) => ({ code: (e as MicroserveError).code }),
    );
    const forger = new WebSocket(control.url!, { headers: { authorization: `Bearer ${TOKEN}` } });
    await new Promise((r) => forger.on('open', r));
    forger.send(pack({ k: 'hello', nodeId: 'forger', url: null, paths: [], join: true }));
    for (let id = 1; id < 50; id++) forger.send(pack({ k: 'reply', to: 'node/control', id, body: { type: 'forged' } }));
    assert.equal(await waiting, { code: 'QUERY_TIMEOUT' });
    assert.is(forger.readyState, WebSocket.OPEN); // stray replies are dropped, not a violation
    forger.terminate();
  } finally {
    intruder.terminate();
    await control.close();
  }
});

test.run();
