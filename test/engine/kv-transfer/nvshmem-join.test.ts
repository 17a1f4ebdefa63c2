/**
 * The NVSHMEM bootstrap over real actor nodes (control + two engine-side nodes, ws sockets):
 * claims, the unique id handed from rank 0, a restarted member running without NVSHMEM, and the
 * job `up` assigns to each engine. On this CPU machine the addon has no NVSHMEM, so rank 0 cannot
 * make an id: it says so and every member runs without NVSHMEM (the path a GPU host without
 * NVSHMEM takes) — the GPU run (bench/gpu/transfer.sh) covers the joined job.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { nvshmemRendezvous } from '../../../actors/engine/kv-transfer/nvshmem-join.ts';
import { isMicroserveError } from '../../../common/errors.ts';
import { ActorSystem } from '../../../actors/runtime/system.ts';
import { engineProcSpec } from '../../../supervisors/cluster.ts';
import { spawnNvshmemRendezvous } from '../../../supervisors/nvshmem-rendezvous.ts';
import { parseTopology } from '../../../topology/load.ts';

const TOKEN = 'nvshmem-join-test-token-0123456789';
let control: ActorSystem;
let a: ActorSystem;
let b: ActorSystem;

test.before(async () => {
  control = await ActorSystem.start({ nodeId: 'control', token: TOKEN, listen: { host: '127.0.0.1', port: 0 } });
  spawnNvshmemRendezvous(control);
  a = await ActorSystem.start({ nodeId: 'engine-a', token: TOKEN, controlUrl: control.url!, listen: { host: '127.0.0.1', port: 0 } });
  b = await ActorSystem.start({ nodeId: 'engine-b', token: TOKEN, controlUrl: control.url!, listen: { host: '127.0.0.1', port: 0 } });
});
test.after(async () => {
  await b.close();
  await a.close();
  await control.close();
});

test('rank 1 waits for rank 0; an id rank 0 cannot make sends both on without NVSHMEM', async () => {
  const job = { job: 'local:d0@cuda:0,p0@cuda:0#0', nranks: 2 };
  const r1 = nvshmemRendezvous(b, 'p0', { ...job, rank: 1 });
  await new Promise((r) => setTimeout(r, 300)); // rank 1 is polling
  const r0 = await nvshmemRendezvous(a, 'd0', { ...job, rank: 0 });
  assert.is(r0, null, 'no NVSHMEM in this build: rank 0 publishes null');
  assert.is(await r1, null, 'rank 1 learns it and does not wait forever');
});

test('the id travels from rank 0 to the others; a restarted member does not rejoin', async () => {
  const ref = a.ref('nvshmem');
  const job = 'local:x@cuda:0,y@cuda:0#3';
  assert.equal(await ref.query({ type: 'claim', job, rank: 0 }, 2000), { first: true });
  const uid = Uint8Array.from({ length: 128 }, (_, i) => (i * 7) & 255);
  await ref.query({ type: 'publish', job, uid }, 2000);
  const got = await nvshmemRendezvous(b, 'y', { job, rank: 1, nranks: 2 });
  assert.ok(got && got.rank === 1 && got.nranks === 2);
  assert.equal([...got!.uid], [...uid]);
  assert.is(await nvshmemRendezvous(b, 'y', { job, rank: 1, nranks: 2 }), null, 'the same rank again: a restart, runs without NVSHMEM');
  try {
    await ref.query({ type: 'publish', job, uid }, 2000);
    assert.unreachable();
  } catch (e) {
    assert.ok(isMicroserveError(e, 'DUPLICATE_REQUEST'));
  }
  try {
    await ref.query({ type: 'publish', job: 'j', uid: new Uint8Array(5) }, 2000);
    assert.unreachable();
  } catch (e) {
    assert.ok(isMicroserveError(e, 'BAD_MESSAGE'));
  }
});

test('up gives the GPU engines of one host one job, ranked by name; others none', () => {
  const t = parseTopology(
    `model: tiny
transport: nvshmem
engines:
  - { name: p0, role: prefill, device: "cuda:0" }
  - { name: d0, role: decode, device: "cuda:0" }
  - { name: d1, role: decode, device: "cuda:1" }
`,
    undefined,
    { numGpus: 2 },
  );
  const specs = t.engines.map((e) => engineProcSpec(t, e, 2));
  const jobs = specs.map((s) => (s.kind === 'engine' ? s.nvshmem : undefined));
  assert.equal(jobs, [
    { job: 'local:d0@cuda:0,d1@cuda:1,p0@cuda:0#2', rank: 2, nranks: 3 },
    { job: 'local:d0@cuda:0,d1@cuda:1,p0@cuda:0#2', rank: 0, nranks: 3 },
    { job: 'local:d0@cuda:0,d1@cuda:1,p0@cuda:0#2', rank: 1, nranks: 3 },
  ]);
  const ipc = parseTopology(`model: tiny\ntransport: cuda-ipc\nengines:\n  - { name: p0, device: "cuda:0" }\n  - { name: d0, device: "cuda:0" }\n`, undefined, { numGpus: 1 });
  assert.equal(ipc.engines.map((e) => (engineProcSpec(ipc, e) as { nvshmem?: unknown }).nvshmem), [undefined, undefined]);
});

test.run();
