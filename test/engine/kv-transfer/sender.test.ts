/**
 * The sender's GPU push path (kv-transfer/sender.ts: lease, layer-by-layer writes during the
 * forwards, cached pages whole afterwards, kv_push_end) on the CPU. No GPU here, so P's backend
 * gets a KvIpcOps that moves real page bytes between two real CPU backends: `forwardWithSend`
 * runs the forward and then copies the step's page pairs (the GPU copies each layer's slice right
 * after the layer; the bytes that land are the same), `copyPages` copies whole pages. The
 * receiver is a real EngineCore taking kv_push_begin / kv_push_end. What is checked is the
 * sender's bookkeeping: which pages go when, what counts as sent and received, the fallback, the
 * deadline, and that D's tokens equal one engine's.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { EngineCore } from '../../../actors/engine/engine-core.ts';
import { noWrite, type KvTransport } from '../../../actors/engine/kv-transfer/transport.ts';
import { isMicroserveError } from '../../../common/errors.ts';
import type { Backend, KvIpcOps } from '../../../native/backend.ts';
import type { LoadedModel } from '../../../native/index.ts';
import { CASES, Collector, directTransport, greedy, makeCore, openFixture, usedPages } from '../helpers.ts';

const PS = 16;
let mp: LoadedModel;
let md: LoadedModel;

/** What the double saw: forwards with a send, page pairs pushed, whole-page copies. */
interface Seen {
  numSendForwards: number;
  numPushedPages: number;
  numCopiedPages: number;
  /** [stallMs=0] each forwardWithSend waits this long first (a slow GPU step). */
  stallMs: number;
  /** [isPeerBroken=false] openPeer rejects (the pool cannot be opened). */
  isPeerBroken: boolean;
}

/** P's backend with a KvIpcOps whose peer pool is `dst` (see the file comment). */
function pushingBackend(src: Backend, dst: Backend, seen: Seen): Backend {
  const copy = async (srcPages: Int32Array, dstPages: Int32Array) => {
    if (srcPages.length > 0) await dst.writePages(dstPages, await src.readPages(srcPages));
  };
  const kvIpc: KvIpcOps = {
    exportPool: () => Promise.reject(new Error('not a GPU')),
    openNvshmemPeer: () => Promise.reject(new Error('not a GPU')),
    openPeer: async () => {
      if (seen.isPeerBroken) throw new Error('cudaIpcOpenMemHandle failed (test)');
      return 3;
    },
    async copyPages(peerId, localPages, peerPages, toPeer) {
      assert.is(peerId, 3);
      assert.ok(toPeer);
      seen.numCopiedPages += localPages.length;
      await copy(localPages, peerPages);
      return 0.01;
    },
    async forwardWithSend(batch, send) {
      assert.is(send.peerId, 3);
      assert.equal([...(send.peerIds ?? [])], Array(send.srcPages.length).fill(3));
      if (seen.stallMs) await new Promise((r) => setTimeout(r, seen.stallMs));
      seen.numSendForwards++;
      seen.numPushedPages += send.srcPages.length;
      const tokens = await src.forwardTokens(batch as Parameters<Backend['forwardTokens']>[0]);
      await copy(send.srcPages, send.dstPages);
      return { logits: new Float32Array(0), tokens, timeline: { layers: [], computeEnd: 2, sendEnd: 2.5 } };
    },
  };
  return Object.create(src, { kvIpc: { value: kvIpc } }) as Backend;
}

/** The cuda-ipc transport's shape over in-process calls into D (lease messages straight to its core). */
function pushTransport(D: () => EngineCore, P: () => EngineCore): KvTransport {
  return {
    name: 'cuda-ipc',
    maxChunkBytes: Number.MAX_SAFE_INTEGER,
    fallback: directTransport(D),
    write: noWrite('cuda-ipc'),
    push: {
      openPeer: () => P().backend.kvIpc!.openPeer(new Uint8Array(64), D().kv.numPages),
      async begin(id, pageIds, deadline) {
        D().kvPushBegin({ id, pageIds, ttlMs: Math.max(1, deadline - Date.now()) });
      },
      async end(id, ok) {
        return D().kvPushEnd({ id, ok }).bytes;
      },
    },
  };
}

function pair(maxBatchTokens = 512, ttlMs?: number) {
  const seen: Seen = { numSendForwards: 0, numPushedPages: 0, numCopiedPages: 0, stallMs: 0, isPeerBroken: false };
  const cP = new Collector();
  const cD = new Collector();
  const refs: { P?: EngineCore; D?: EngineCore } = {};
  const pModel = { ...mp, backend: pushingBackend(mp.backend, md.backend, seen) };
  refs.P = makeCore(pModel, { name: 'p', collector: cP, maxBatchTokens, defaultTtlMs: ttlMs, pickTransport: () => pushTransport(() => refs.D!, () => refs.P!) });
  refs.D = makeCore(md, { name: 'd', collector: cD, maxBatchTokens, pushLeaseGraceMs: 5000 });
  return { P: refs.P, D: refs.D, cD, seen };
}

async function allIdle(...cores: EngineCore[]) {
  for (const c of cores) {
    await c.whenIdle();
    c.kv.checkIntegrity();
    assert.is(usedPages(c), 0, `${c.name}: pages in use after idle`);
    assert.is(c.status().numPushLeases, 0, `${c.name}: push leases left`);
  }
}

test.before(async () => {
  mp = await openFixture(64, PS);
  md = await openFixture(64, PS);
});
test.after(() => {
  mp.backend.close();
  md.backend.close();
});

test('P/D over a push: D gets [0, end) from the forwards, prefills 1 token, and streams one engine\'s tokens', async () => {
  const { P, D, cD, seen } = pair();
  for (const [i, cs] of CASES.entries()) {
    const id = `push${i}`;
    const end = cs.prompt_ids.length - 1;
    const d0 = structuredClone(D.counters);
    const { matchedLen, kvAddr } = D.prepRecv({ id, promptIds: cs.prompt_ids, end });
    const sent = await P.remoteSend({ id, promptIds: cs.prompt_ids, begin: matchedLen, end, kvAddr });
    const numPages = Math.ceil(end / PS);
    assert.equal(sent, { computedTokens: end, sentTokens: end, sentBytes: numPages * mp.backend.pageBytes, transport: 'cuda-ipc' });
    assert.is(D.counters.bytesReceived - d0.bytesReceived, numPages * md.backend.pageBytes, 'kv_push_end counted every page');
    assert.is(D.counters.tokensReceived - d0.tokensReceived, end);
    D.startGenerate({ id, promptIds: cs.prompt_ids, begin: end, sampling: greedy(32), replyTo: 'router' });
    const s = await cD.done(id);
    assert.equal(s.tokens, cs.greedy_ids, `case ${i}`);
    assert.is(D.counters.tokensPrefilled - d0.tokensPrefilled, 1, 'D computed only the last prompt token');
  }
  assert.is(seen.numCopiedPages, 0, 'nothing was cached on P: every page went with its forward');
  assert.ok(seen.numSendForwards >= CASES.length);
  assert.is(P.counters.layerPush!.forwards, seen.numSendForwards);
  assert.ok(Math.abs(P.counters.layerPush!.exposedMs - 0.5 * seen.numSendForwards) < 1e-9);
  assert.is(P.counters.transfers['cuda-ipc'], CASES.length);
  await allIdle(P, D);
});

test('chunked prefill: a page two chunks touch is pushed by both; cached pages go whole afterwards', async () => {
  const { P, D, cD, seen } = pair(24);
  const cs = CASES[2];
  const end = cs.prompt_ids.length - 1;
  // P holds the first pages in its prefix cache: those are copied after the compute, not pushed.
  P.generate({ id: 'warm', promptIds: cs.prompt_ids.slice(0, 40), sampling: greedy(1), replyTo: 'x' });
  await P.whenIdle();
  const { kvAddr } = D.prepRecv({ id: 'c', promptIds: cs.prompt_ids, end });
  const sent = await P.remoteSend({ id: 'c', promptIds: cs.prompt_ids, begin: 0, end, kvAddr });
  assert.is(sent.computedTokens, end - 32, 'P computed what its cache lacked (2 full pages cached)');
  assert.is(seen.numCopiedPages, 2, 'the 2 cached pages went whole after the compute');
  assert.ok(seen.numPushedPages > Math.ceil(end / PS) - 2, `pages touched by several 24-token chunks are pushed again (${seen.numPushedPages})`);
  D.startGenerate({ id: 'c', promptIds: cs.prompt_ids, begin: end, sampling: greedy(32), replyTo: 'router' });
  assert.equal((await cD.done('c')).tokens, cs.greedy_ids);
  await allIdle(P, D);
});

test('a pool that cannot be opened falls back to host; the tokens are the same', async () => {
  const { P, D, cD, seen } = pair();
  seen.isPeerBroken = true;
  const cs = CASES[1];
  const end = cs.prompt_ids.length - 1;
  const { kvAddr } = D.prepRecv({ id: 'f', promptIds: cs.prompt_ids, end });
  const sent = await P.remoteSend({ id: 'f', promptIds: cs.prompt_ids, begin: 0, end, kvAddr });
  assert.is(sent.transport, 'host');
  assert.is(seen.numSendForwards, 0);
  D.startGenerate({ id: 'f', promptIds: cs.prompt_ids, begin: end, sampling: greedy(32), replyTo: 'router' });
  assert.equal((await cD.done('f')).tokens, cs.greedy_ids);
  await allIdle(P, D);
});

test('past the deadline: TRANSFER_TIMEOUT; the lease ends unwritten once the step is over; D recomputes', async () => {
  const { P, D, cD, seen } = pair(512, 100);
  seen.stallMs = 400; // the forward with the send outlives the 100 ms deadline
  const cs = CASES[0];
  const end = cs.prompt_ids.length - 1;
  const { kvAddr } = D.prepRecv({ id: 't', promptIds: cs.prompt_ids, end, ttlMs: 30_000 });
  const err = await P.remoteSend({ id: 't', promptIds: cs.prompt_ids, begin: 0, end, kvAddr, ttlMs: 100 }).then(
    () => null,
    (e) => e,
  );
  assert.ok(isMicroserveError(err, 'TRANSFER_TIMEOUT'), String(err));
  assert.is(D.status().numPushLeases, 1, 'the step still runs: its writes may land, the lease holds');
  await P.whenIdle();
  for (let i = 0; i < 100 && D.status().numPushLeases > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.is(D.status().numPushLeases, 0, 'ended (unwritten) after the step');
  const d0 = structuredClone(D.counters);
  D.startGenerate({ id: 't', promptIds: cs.prompt_ids, begin: end, sampling: greedy(32), replyTo: 'router' });
  assert.equal((await cD.done('t')).tokens, cs.greedy_ids);
  assert.is(D.counters.tokensPrefilled - d0.tokensPrefilled, cs.prompt_ids.length, 'nothing counted as received: D computed the whole prompt');
  await allIdle(P, D);
});

test.run();
