/**
 * KV transfer between two engine processes on one GPU (run by bench/gpu/transfer.sh), over CUDA IPC
 * or (MS_BENCH_TRANSPORT=nvshmem) NVSHMEM, pushed layer by layer during the sender's prefill:
 *   node --import tsx bench/gpu/transfer-bench.ts <fixture|llama-3.1-8b> <out.json>
 * This process holds engine `p` (and the control node); a child process holds engine `d`.
 * (a) P/D and migration through cuda-ipc give one engine's greedy tokens, counters show cuda-ipc;
 * (b) N pages p -> d vs a plain device copy within one pool (GPU event time, payload bytes);
 * (c) forwardWithSend: per-layer timestamps and the hidden share at 1000-4000 prompt tokens;
 * (d) D's time to first token for a 1000-token prompt: recompute vs migrate from P.
 */
import { fork } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { spawnEngine, type EngineHandle } from '../../actors/engine/actor.ts';
import { tokensItems, type EngineStatus, type PrepRecvResult, type RemoteSendResult, type TokensBatchMsg, type TokensMsg } from '../../actors/messages.ts';
import { ActorSystem } from '../../actors/runtime/system.ts';
import { spawnNvshmemRendezvous } from '../../supervisors/nvshmem-rendezvous.ts';
import { FIXTURE } from '../../test/engine/helpers.ts';
import type { NativeBackend } from '../../native/native-backend.ts';

const TOKEN = 'transfer-bench-token-0123456789';
const [, , modelArg = 'fixture', outFile = '/tmp/kv-transfer.json', urlArg] = process.argv;
const model = modelArg === 'fixture' ? FIXTURE : modelArg;
const big = modelArg !== 'fixture';
/** MS_BENCH_TRANSPORT: cuda-ipc (default) or nvshmem (both engines form one NVSHMEM job of 2 PEs). */
const transport = (process.env.MS_BENCH_TRANSPORT ?? 'cuda-ipc') as 'cuda-ipc' | 'nvshmem';
const engineOpts = { model, device: process.env.MS_BENCH_DEVICE ?? 'cuda:0', kvPages: big ? 1024 : 512, pageSize: 16, maxBatchTokens: big ? 8192 : 2048, seed: 1, transport };
const nvshmemOf = (rank: number) => (transport === 'nvshmem' ? { nvshmem: { job: 'transfer-bench#0', rank, nranks: 2 } } : {});
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const sampling = (n: number) => ({ maxTokens: n, temperature: 0, topP: 1, stopTokenIds: [] as number[] });

if (urlArg) {
  // child: engine d
  const node = await ActorSystem.start({ nodeId: 'node-d', token: TOKEN, controlUrl: urlArg, listen: { host: '127.0.0.1', port: 0 } });
  const d = await spawnEngine(node, { name: 'd', ...engineOpts, ...nvshmemOf(1) });
  process.send!('ready');
  process.on('message', async (m) => {
    if (m === 'exit') {
      await d.close();
      await node.close();
      process.exit(0);
    }
  });
} else {
  await main();
}

async function main(): Promise<void> {
  const res: Record<string, unknown> = { model: modelArg, date: new Date().toISOString() };
  const node = await ActorSystem.start({ nodeId: 'control', token: TOKEN, listen: { host: '127.0.0.1', port: 0 } });
  const streams = new Map<string, { tokens: number[]; t0: number; tFirst?: number; done: Promise<void>; resolve: () => void }>();
  const stream = (id: string) => {
    let s = streams.get(id);
    if (!s) {
      let resolve!: () => void;
      const done = new Promise<void>((r) => (resolve = r));
      s = { tokens: [], t0: performance.now(), done, resolve };
      streams.set(id, s);
    }
    return s;
  };
  node.spawn('sink/b', (raw: TokensMsg | TokensBatchMsg) => {
    for (const msg of tokensItems(raw)) {
      const s = stream(msg.id);
      if (s.tFirst === undefined && msg.tokens.length) s.tFirst = performance.now();
      s.tokens.push(...msg.tokens);
      if (msg.finish) s.resolve();
    }
  });
  spawnNvshmemRendezvous(node);
  const child = fork(new URL(import.meta.url).pathname, [modelArg, outFile, node.url!], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  const childReady = new Promise<void>((r) => child.once('message', () => r()));
  process.on('exit', () => child.kill());
  process.on('unhandledRejection', (e) => {
    console.error(e);
    process.exit(1);
  });
  const p: EngineHandle = await spawnEngine(node, { name: 'p', ...engineOpts, ...nvshmemOf(0) });
  res.transport = transport;
  res.nvshmem = p.loaded.nvshmem;
  console.log('engine p', transport, JSON.stringify(p.loaded.nvshmem));
  await childReady;
  for (let i = 0; i < 500 && !node.listActors().some((a) => a.path === 'engine/d'); i++) await new Promise((r) => setTimeout(r, 10));
  const P = node.ref('engine/p');
  const D = node.ref('engine/d');
  const vocab = p.loaded.backend.config.vocabSize;
  let seq = 0;
  const prompt = (n: number) => Array.from({ length: n }, (_, i) => (i * 7919 + seq * 104729 + 13) % (vocab - 2) + 1);
  const gen = async (ref: typeof P, id: string, ids: number[], n: number) => {
    stream(id).t0 = performance.now();
    await ref.query({ type: 'generate', id, promptIds: ids, sampling: sampling(n), replyTo: 'sink/b' }, 120000);
    await stream(id).done;
    return stream(id);
  };
  const pd = async (id: string, ids: number[], n: number, forceHost = false) => {
    const end = ids.length - 1;
    stream(id).t0 = performance.now();
    const prep = await D.query<PrepRecvResult>({ type: 'prep_recv', id, promptIds: ids, end }, 30000);
    const sent = await P.query<RemoteSendResult>({ type: 'remote_send', id, promptIds: ids, begin: prep.matchedLen, end, kvAddr: forceHost ? { ...prep.kvAddr, transports: ['host'] } : prep.kvAddr }, 60000);
    await D.query({ type: 'start_generate', id, promptIds: ids, begin: end, sampling: sampling(n), replyTo: 'sink/b' }, 30000);
    await stream(id).done;
    return { s: stream(id), sent, prep };
  };

  // (a) equivalence
  const eq: Record<string, unknown>[] = [];
  for (const len of big ? [100, 1000] : [40, 300]) {
    seq++;
    const ids = prompt(len);
    const ref = await gen(D, `ref-${seq}`, ids, 16);
    await D.query({ type: 'flush_cache' }, 10000);
    const a = await pd(`pd-${seq}`, ids, 16); // p computes [0, end), cuda-ipc into d
    await D.query({ type: 'flush_cache' }, 10000);
    const m = await pd(`mig-${seq}`, ids, 16); // p has [0, end) cached: migration without recompute
    await D.query({ type: 'flush_cache' }, 10000);
    await P.query({ type: 'flush_cache' }, 10000);
    const h = await pd(`host-${seq}`, ids, 16, true); // the same P/D split through the host transport
    await P.query({ type: 'flush_cache' }, 10000);
    const firstDiff = (x: number[]) => x.findIndex((t, i) => t !== ref.tokens[i]);
    eq.push({ len, pdSame: a.s.tokens.join() === ref.tokens.join(), pdFirstDiff: firstDiff(a.s.tokens), ipcSameAsHost: a.s.tokens.join() === h.s.tokens.join(), migSameAsHost: m.s.tokens.join() === h.s.tokens.join(), hostTransport: h.sent.transport, migSame: m.s.tokens.join() === ref.tokens.join(), pdTransport: a.sent.transport, migTransport: m.sent.transport, pdComputed: a.sent.computedTokens, migComputed: m.sent.computedTokens, sentBytes: a.sent.sentBytes, hasIpc: !!a.prep.kvAddr.ipc, hasNvshmem: !!a.prep.kvAddr.nvshmem });
    await D.query({ type: 'flush_cache' }, 10000);
  }
  const ds = await D.query<EngineStatus>({ type: 'status' }, 5000);
  const ps = await P.query<EngineStatus>({ type: 'status' }, 5000);
  res.equivalence = eq;
  res.counters = { p: { transfers: ps.counters.transfers, bytesSent: ps.counters.bytesSent, layerPush: ps.counters.layerPush }, d: { bytesReceived: ds.counters.bytesReceived, tokensReceived: ds.counters.tokensReceived, tokensPrefilled: ds.counters.tokensPrefilled } };
  console.log('equivalence', JSON.stringify(eq), JSON.stringify(res.counters));

  // (d) migration speed-up, 1000-token prefix (+1 token D computes)
  const mig = { recomputeMs: [] as number[], migrateMs: [] as number[] };
  for (let r = 0; r < 6; r++) {
    seq++;
    const ids = prompt(1001);
    await D.query({ type: 'flush_cache' }, 10000);
    const rc = await gen(D, `rc-${seq}`, ids, 1);
    await D.query({ type: 'flush_cache' }, 10000);
    await gen(P, `warm-${seq}`, ids, 1); // P holds the prefix
    const m = await pd(`m-${seq}`, ids, 1);
    if (r === 0) continue; // warm-up
    mig.recomputeMs.push(rc.tFirst! - rc.t0);
    mig.migrateMs.push(m.s.tFirst! - m.s.t0);
  }
  res.migration = { recomputeMs: median(mig.recomputeMs), migrateMs: median(mig.migrateMs), speedup: median(mig.recomputeMs) / median(mig.migrateMs), n: mig.recomputeMs.length };
  console.log('migration', JSON.stringify(res.migration));

  // (b), (c): raw backend calls on p's backend into d's pool (both engines idle from here on).
  await p.core.whenIdle?.();
  const be = p.loaded.backend as NativeBackend;
  seq++;
  const prep = await D.query<PrepRecvResult>({ type: 'prep_recv', id: `raw-${seq}`, promptIds: prompt(20), end: 16 }, 5000);
  let peer: number;
  if (transport === 'nvshmem') {
    const o = await be.kvIpc.openNvshmemPeer(prep.kvAddr.nvshmem!.pe);
    peer = o.peerId;
    res.nvshmemDirect = o.direct; // true: nvshmem_ptr load/store path; false: putmem_on_stream
  } else {
    peer = await be.kvIpc.openPeer(prep.kvAddr.ipc!.handle, prep.kvAddr.ipc!.numPages);
  }
  const N = big ? 256 : 256;
  const range = (a: number, n: number) => Int32Array.from({ length: n }, (_, i) => a + i);
  const rate = async (peerId: number, dst: Int32Array) => {
    const ms: number[] = [];
    for (let i = 0; i < 12; i++) ms.push(await be.kvIpc.copyPages(peerId, range(0, N), dst, true));
    const m = median(ms.slice(2));
    return { ms: m, GBps: (N * be.pageBytes) / m / 1e6 };
  };
  res.rate = { pages: N, bytes: N * be.pageBytes, ipc: await rate(peer, range(0, N)), local: await rate(-1, range(N, N)), peer: transport };
  console.log('rate', JSON.stringify(res.rate));

  // (c) overlap
  const ov: Record<string, unknown>[] = [];
  for (const T of big ? [1000, 2000, 4000] : [500, 1000]) {  // the fixture model holds 1024 positions
    const np = Math.ceil(T / 16);
    const tokens = Int32Array.from(prompt(T));
    const batch = { seqs: [{ tokens, startPos: 0, pageTable: range(0, np) }] };
    // correctness of the layer-by-layer copy: send into this pool's own pages and compare bytes
    await be.kvIpc.forwardWithSend(batch, { peerId: -1, srcPages: range(0, np), dstPages: range(np, np) });
    const [x, y] = [await be.readPages(range(0, np)), await be.readPages(range(np, np))];
    const same = Buffer.compare(Buffer.from(x), Buffer.from(y)) === 0;
    const alone: number[] = [], withSend: number[] = [], send: number[] = [], tail: number[] = [];
    let tl = null;
    for (let r = 0; r < 23; r++) {
      const a = await be.kvIpc.forwardWithSend(batch, { peerId: peer, srcPages: new Int32Array(0), dstPages: new Int32Array(0) });
      const w = await be.kvIpc.forwardWithSend(batch, { peerId: peer, srcPages: range(0, np), dstPages: range(0, np) });
      const s = await be.kvIpc.copyPages(peer, range(0, np), range(0, np), true);
      if (r < 3) continue;
      alone.push(a.timeline.computeEnd);
      withSend.push(Math.max(w.timeline.computeEnd, w.timeline.sendEnd));
      send.push(s);
      tail.push(Math.max(0, w.timeline.sendEnd - w.timeline.computeEnd));
      tl = w.timeline;
    }
    const L = tl!.layers;
    const last = L[L.length - 1].computed;
    const early = L.slice(0, -1).filter((l) => l.copyStart < last).length;
    const tAlone = median(alone), tWith = median(withSend), tSend = median(send);
    ov.push({ T, pages: np, sendBytes: np * be.pageBytes, correct: same, tAloneMs: tAlone, tWithMs: tWith, tSendMs: tSend, hiddenShare: 1 - (tWith - tAlone) / tSend, exposedTailMs: median(tail), hiddenShareTail: 1 - median(tail) / tSend, layersCopyStartedBeforeLastLayerEnd: `${early}/${L.length - 1}`, timeline: { first: L.slice(0, 3), lastLayers: L.slice(-2), computeEnd: tl!.computeEnd, sendEnd: tl!.sendEnd } });
    console.log('overlap', JSON.stringify(ov[ov.length - 1]));
  }
  res.overlap = ov;

  // (e) aborts while a push is in flight (8B: a 4000-token prefill takes ~110 ms): abort on D (the
  // receiver) and on P (the sender) 30 ms into remote_send; D's pages must all come back (its
  // leases end once P's writes are done) and D's integrity check must hold.
  if (big) {
    const used = (st: EngineStatus) => st.kv.inUse + st.kv.reserved;
    const aborts: Record<string, unknown>[] = [];
    await D.query({ type: 'flush_cache' }, 10000);
    await P.query({ type: 'flush_cache' }, 10000);
    const base = used(await D.query<EngineStatus>({ type: 'status' }, 5000));
    for (const who of ['D', 'P'] as const) {
      seq++;
      const id = `abort-${who}-${seq}`;
      const ids = prompt(4000);
      const prep = await D.query<PrepRecvResult>({ type: 'prep_recv', id, promptIds: ids, end: ids.length - 1 }, 30000);
      const sending = P.query<RemoteSendResult>({ type: 'remote_send', id, promptIds: ids, begin: prep.matchedLen, end: ids.length - 1, kvAddr: prep.kvAddr }, 60000).then(
        (r) => `ok ${r.transport}`,
        (e) => `error ${(e as { code?: string }).code}`,
      );
      await new Promise((r) => setTimeout(r, 30));
      await (who === 'D' ? D : P).query({ type: 'abort', id }, 5000);
      const heldRightAfter = used(await D.query<EngineStatus>({ type: 'status' }, 5000)) - base;
      const outcome = await sending;
      if (who === 'P') await D.query({ type: 'abort', id }, 5000); // the reservation is D's to drop
      let back = false;
      for (let i = 0; i < 100 && !back; i++) {
        back = used(await D.query<EngineStatus>({ type: 'status' }, 5000)) <= base; // (b)'s raw reservation may expire meanwhile
        if (!back) await new Promise((r) => setTimeout(r, 50));
      }
      const check = await node.ref('kv/d').query<{ ok: boolean }>({ type: 'check' }, 5000).then((r) => (r.ok ? 'ok' : 'bad'), (e) => `failed: ${(e as Error).message}`);
      aborts.push({ abortOn: who, remoteSend: outcome, pagesHeldRightAfterAbort: heldRightAfter, allPagesBack: back, dIntegrityCheck: check });
    }
    res.abortsDuringPush = aborts;
    console.log('aborts during push', JSON.stringify(aborts));
  }
  res.device = be.deviceName;
  writeFileSync(outFile, JSON.stringify(res, null, 1));
  child.send('exit');
  await new Promise((r) => child.once('exit', r));
  await p.close();
  await node.close();
  process.exit(0);
}
