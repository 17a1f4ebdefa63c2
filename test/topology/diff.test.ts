import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { describeDiff, diffTopology } from '../../topology/diff.ts';
import { parseTopology } from '../../topology/load.ts';
import { stringifyTopology, withStrategy } from '../../topology/serialize.ts';
import type { Topology } from '../../topology/types.ts';

const topo = (yaml: string): Topology => parseTopology(yaml, undefined, { numGpus: 2 });
const BASE = `model: tiny
engines:
  - { name: e0, role: both }
  - { name: e1, role: both }
`;

test('identical topologies: empty diff', () => {
  const d = diffTopology(topo(BASE), topo(BASE));
  assert.ok(d.isEmpty);
  assert.equal(describeDiff(d), []);
});

test('role and strategy changes are in place', () => {
  const next = topo(`model: tiny
router: { strategy: balanced-pd, params: { ratio: 0.1 } }
engines:
  - { name: e0, role: prefill }
  - { name: e1, role: decode }
`);
  const d = diffTopology(topo(BASE), next);
  assert.not.ok(d.isEmpty);
  assert.equal(d.roleChanges, [
    { name: 'e0', from: 'both', to: 'prefill' },
    { name: 'e1', from: 'both', to: 'decode' },
  ]);
  assert.equal(d.strategyChange, { from: { strategy: 'dp', params: {} }, to: { strategy: 'balanced-pd', params: { ratio: 0.1 } } });
  assert.equal([d.added, d.removed, d.restart], [[], [], []]);
  assert.equal(describeDiff(d), ['engine e0: role both → prefill', 'engine e1: role both → decode', 'strategy dp → balanced-pd {"ratio":0.1}']);
});

test('params alone are a strategy change; key order is not', () => {
  const a = topo(`${BASE}router: { strategy: dp-prefix, params: { minMatch: 8, maxLoadGap: 2 } }\n`);
  const b = topo(`${BASE}router: { strategy: dp-prefix, params: { maxLoadGap: 2, minMatch: 8 } }\n`);
  const c = topo(`${BASE}router: { strategy: dp-prefix, params: { maxLoadGap: 3, minMatch: 8 } }\n`);
  assert.ok(diffTopology(a, b).isEmpty);
  assert.ok(diffTopology(a, c).strategyChange);
});

test('added and removed engines; process fields restart', () => {
  const next = topo(`model: tiny
engines:
  - { name: e0, role: both, kvPages: 1024, threads: 2 }
  - { name: e2, role: decode }
`);
  const d = diffTopology(topo(BASE), next);
  assert.equal(d.added.map((e) => e.name), ['e2']);
  assert.equal(d.removed.map((e) => e.name), ['e1']);
  assert.equal(d.restart, [{ spec: next.engines[0], reasons: ['kvPages 512 → 1024', 'threads 0 → 2'] }]);
  assert.equal(d.roleChanges, []);
});

test('the memory plan fields are process fields: maxNumSeqs, gpuMemoryUtilization, kvPages auto restart the engine', () => {
  const next = topo(`model: tiny
engines:
  - { name: e0, role: both, maxNumSeqs: 32, gpuMemoryUtilization: 0.5 }
  - { name: e1, role: both, kvPages: auto }
`);
  const d = diffTopology(topo(BASE), next);
  assert.equal(d.restart.map((r) => [r.spec.name, r.reasons]), [
    ['e0', ['maxNumSeqs 256 → 32', 'gpuMemoryUtilization 0.9 → 0.5']],
    ['e1', ['kvPages 512 → auto']],
  ]);
});

test('grammarWorkers is a process field: a change restarts that engine', () => {
  const next = topo(BASE.replace('- { name: e0, role: both }', '- { name: e0, role: both, grammarWorkers: 2 }'));
  assert.equal(diffTopology(topo(BASE), next).restart.map((r) => [r.spec.name, r.reasons]), [['e0', ['grammarWorkers (default) → 2']]]);
});

test('model and transport changes restart every engine', () => {
  const d = diffTopology(topo(BASE), topo(BASE.replace('model: tiny', 'model: llama-3.1-8b\ntransport: host')));
  assert.equal(d.restart.map((r) => [r.spec.name, r.reasons]), [
    ['e0', ['model tiny → llama-3.1-8b', 'transport auto → host']],
    ['e1', ['model tiny → llama-3.1-8b', 'transport auto → host']],
  ]);
});

test('nvshmem: a change of the job membership restarts the remaining members only', () => {
  const gpu = (extra: string) =>
    topo(`model: llama-3.1-8b
transport: nvshmem
engines:
  - { name: p0, role: prefill, device: "cuda:0" }
  - { name: d0, role: decode, device: "cuda:0" }
${extra}`);
  const d = diffTopology(gpu(''), gpu('  - { name: d1, role: decode, device: "cuda:1" }\n'));
  assert.equal(d.added.map((e) => e.name), ['d1']);
  assert.equal(d.restart.map((r) => r.spec.name), ['p0', 'd0']);
  assert.match(d.restart[0].reasons[0], /^nvshmem membership local:d0@cuda:0,p0@cuda:0 → local:d0@cuda:0,d1@cuda:1,p0@cuda:0$/);
  // a role change keeps membership: in place
  const r = diffTopology(gpu(''), topo(`model: llama-3.1-8b
transport: nvshmem
engines:
  - { name: p0, role: decode, device: "cuda:0" }
  - { name: d0, role: decode, device: "cuda:0" }
`));
  assert.equal([r.restart, r.roleChanges.map((c) => c.name)], [[], ['p0']]);
  // the same membership change under cuda-ipc restarts nobody
  const ipc = (s: string) => s.replace('transport: nvshmem', 'transport: cuda-ipc');
  const c = diffTopology(topo(ipc(`model: llama-3.1-8b\ntransport: nvshmem\nengines:\n  - { name: p0, device: "cuda:0" }\n`)), topo(ipc(`model: llama-3.1-8b\ntransport: nvshmem\nengines:\n  - { name: p0, device: "cuda:0" }\n  - { name: p1, device: "cuda:1" }\n`)));
  assert.equal(c.restart, []);
});

test('router listener and control changes are reported apart', () => {
  const d = diffTopology(topo(BASE), topo(`${BASE}router: { port: 9000, apiKey: k }\ncontrol: { port: 7800 }\n`));
  assert.equal(d.routerChanges, ['port', 'apiKey']);
  assert.equal(d.controlChanges, ['port']);
});

test('engine order is part of the plan', () => {
  const d = diffTopology(topo(BASE), topo(`model: tiny\nengines:\n  - { name: e1 }\n  - { name: e0 }\n`));
  assert.not.ok(d.isEmpty);
});

test('stringifyTopology round-trips, withStrategy changes only the strategy', () => {
  const t = topo(`${BASE}router: { strategy: balanced-pd, params: { ratio: 0.2 }, apiKey: secret }\n`);
  assert.equal(parseTopology(stringifyTopology(t), undefined, { numGpus: 0 }), t);
  const s = withStrategy(t, 'pd', {});
  const d = diffTopology(t, s);
  assert.equal([d.strategyChange?.to, d.roleChanges, d.added, d.removed, d.restart], [{ strategy: 'pd', params: {} }, [], [], [], []]);
});

test.run();
