import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isMicroserveError, type MicroserveError } from '../../common/errors.ts';
import { loadTopology, parseTopology } from '../../topology/load.ts';
import { shippedModelFolder } from '../../native/model-source.ts';

const EXAMPLES = ['default', 'cpu-pd', 'gpu-shared', 'multi-gpu'];

/** The error parseTopology throws for `text` (fails the test when it does not throw). */
function refusal(text: string, numGpus = 1, source?: string): MicroserveError {
  try {
    parseTopology(text, source, { numGpus });
  } catch (e) {
    assert.ok(isMicroserveError(e, 'TOPOLOGY_INVALID'), `expected TOPOLOGY_INVALID, got ${(e as Error).message}`);
    return e as MicroserveError;
  }
  throw new Error('the topology was accepted');
}

const lines = (...l: string[]) => l.join('\n') + '\n';
const GOOD = ['model: tiny', 'engines:', '  - name: e0', '  - name: e1'];

test('every example file loads (with 4 GPUs)', () => {
  for (const f of EXAMPLES) {
    const t = loadTopology(new URL(`../../topology/${f}.yaml`, import.meta.url).pathname, { numGpus: 4 });
    assert.ok(t.engines.length >= 2, f);
    assert.ok(t.source?.endsWith(`${f}.yaml`));
  }
});

test('default.yaml is the documented CPU default', () => {
  const t = loadTopology(new URL('../../topology/default.yaml', import.meta.url).pathname, { numGpus: 0 });
  // the shipped trained model, resolved to its folder wherever microserve is installed
  assert.equal(t.model, shippedModelFolder('kjv-chat'));
  assert.ok(t.model.endsWith('/models/kjv-chat'));
  assert.equal([t.router.host, t.router.port, t.router.strategy], ['127.0.0.1', 8000, 'dp']);
  assert.equal([t.control.host, t.control.port], ['127.0.0.1', 7700]);
  assert.equal(t.engines.map((e) => [e.name, e.role, e.device, e.threads]), [['e0', 'both', 'cpu', 1], ['e1', 'both', 'cpu', 1]]);
});

test('defaults fill every omitted field', () => {
  const t = parseTopology(lines(...GOOD), undefined, { numGpus: 0 });
  assert.equal(t.transport, 'auto');
  assert.equal(t.control, { host: '127.0.0.1', port: 7700, maxFrameBytes: 67108864 });
  assert.equal(t.router, { host: '127.0.0.1', port: 8000, strategy: 'dp', params: {} });
  assert.equal(t.hosts, [{ name: 'local' }]);
  assert.equal(t.engines[0], { name: 'e0', role: 'both', device: 'cpu', host: 'local', kvPages: 512, pageSize: 16, maxBatchTokens: 512, maxNumSeqs: 256, gpuMemoryUtilization: 0.9, threads: 0 });
});

test('maxBatchTokens defaults to 1024 on a GPU and 512 on CPU; a given value is kept', () => {
  const t = parseTopology(lines('model: tiny', 'engines:', '  - { name: g, device: "cuda:0" }', '  - { name: c }', '  - { name: h, device: "cuda:0", maxBatchTokens: 256 }'), undefined, { numGpus: 1 });
  assert.equal(t.engines.map((e) => e.maxBatchTokens), [1024, 512, 256]);
});

test('kvPages defaults to auto on a GPU and 512 on CPU; auto is accepted everywhere', () => {
  const t = parseTopology(lines('model: tiny', 'engines:', '  - { name: g, device: "cuda:0" }', '  - { name: c }', '  - { name: a, kvPages: auto }'), undefined, { numGpus: 1 });
  assert.equal(t.engines.map((e) => e.kvPages), ['auto', 512, 'auto']);
});

test('maxNumSeqs and gpuMemoryUtilization: validated, errors name the field', () => {
  const eng = (f: string) => lines('model: tiny', 'engines:', '  - name: e0', `    ${f}`);
  const t = parseTopology(eng('maxNumSeqs: 64'), undefined, { numGpus: 0 });
  assert.is(t.engines[0].maxNumSeqs, 64);
  assert.is(parseTopology(eng('gpuMemoryUtilization: 0.5'), undefined, { numGpus: 0 }).engines[0].gpuMemoryUtilization, 0.5);
  assert.is(refusal(eng('maxNumSeqs: 0')).message, 'engines[0].maxNumSeqs: expected an integer in [1, 65536], got 0 at line 4');
  assert.is(refusal(eng('maxNumSeqs: 2.5')).message, 'engines[0].maxNumSeqs: expected an integer in [1, 65536], got 2.5 at line 4');
  assert.is(refusal(eng('gpuMemoryUtilization: 0')).message, 'engines[0].gpuMemoryUtilization: expected a number in (0, 1], got 0 at line 4');
  assert.is(refusal(eng('gpuMemoryUtilization: 1.5')).message, 'engines[0].gpuMemoryUtilization: expected a number in (0, 1], got 1.5 at line 4');
  assert.is(refusal(eng("gpuMemoryUtilization: '90%'")).message, "engines[0].gpuMemoryUtilization: expected a number in (0, 1], got '90%' at line 4");
  assert.is(refusal(eng('kvPages: lots')).message, "engines[0].kvPages: expected an integer >= 1 or auto, got 'lots' at line 4");
  assert.is(refusal(eng('maxnumseqs: 8')).message, "engines[0].maxnumseqs: unknown field 'maxnumseqs' (did you mean 'maxNumSeqs'?) at line 4");
});

test('grammarWorkers: optional (the engine picks min(4, cores / 2)), validated, errors name the field', () => {
  const eng = (f: string) => lines('model: tiny', 'engines:', '  - name: e0', `    ${f}`);
  assert.is(parseTopology(eng('grammarWorkers: 3'), undefined, { numGpus: 0 }).engines[0].grammarWorkers, 3);
  assert.is(parseTopology(eng('threads: 0'), undefined, { numGpus: 0 }).engines[0].grammarWorkers, undefined);
  assert.is(refusal(eng('grammarWorkers: 0')).message, 'engines[0].grammarWorkers: expected an integer in [1, 64], got 0 at line 4');
  assert.is(refusal(eng('grammarWorkers: 65')).message, 'engines[0].grammarWorkers: expected an integer in [1, 64], got 65 at line 4');
});

test('kvPages auto is refused in an NVSHMEM job (its equal pools are allocated before the weights load)', () => {
  const e = refusal(lines('model: tiny', 'transport: nvshmem', 'engines:', '  - { name: p0, device: "cuda:0", kvPages: auto }', '  - { name: d0, device: "cuda:0", kvPages: auto }'));
  assert.match(e.message, /^engines\[0\]\.kvPages: kvPages auto cannot be used with transport 'nvshmem'.*set kvPages at line 4/);
  // omitted, a job member gets the fixed 512; one GPU engine alone has no job: auto
  const members = parseTopology(lines('model: tiny', 'transport: nvshmem', 'engines:', '  - { name: p0, device: "cuda:0" }', '  - { name: d0, device: "cuda:0" }'), undefined, { numGpus: 1 });
  assert.equal(members.engines.map((x) => x.kvPages), [512, 512]);
  const t = parseTopology(lines('model: tiny', 'transport: nvshmem', 'engines:', '  - { name: d0, device: "cuda:0" }'), undefined, { numGpus: 1 });
  assert.is(t.engines[0].kvPages, 'auto');
});

test('bad YAML names the line', () => {
  const e = refusal(lines('model: tiny', 'engines:', '  - name: e0', '    role: [both', '  - name: e1'));
  assert.match(e.message, /^bad YAML: .+ at line \d+$/m);
  const dup = refusal(lines('model: tiny', 'engines:', '  - name: e0', 'model: tiny'));
  assert.match(dup.message, /^bad YAML: Map keys must be unique at line 4/);
});

test('unknown role', () => {
  const e = refusal(lines('model: tiny', 'engines:', '  - name: e0', '  - name: e1', '    role: decoder'));
  assert.is(e.message, "engines[1].role: unknown role 'decoder' (expected prefill, decode or both) at line 5");
  assert.equal([e.info?.field, e.info?.line], ['engines[1].role', 5]);
});

test('unknown strategy, and a strategy module that does not exist', () => {
  const e = refusal(lines(...GOOD, 'router:', '  strategy: dq'));
  assert.is(e.message, "router.strategy: unknown strategy 'dq' (expected dp, dp-prefix, pd, balanced-pd, migrate, or a module path) at line 6");
  const m = refusal(lines(...GOOD, 'router:', '  strategy: ./my-strategy.ts'), 1, '/tmp/topo/x.yaml');
  assert.is(m.message, 'router.strategy: strategy module /tmp/topo/my-strategy.ts does not exist at line 6');
});

test('bad built-in strategy params', () => {
  const e = refusal(lines(...GOOD, 'router:', '  strategy: balanced-pd', '  params:', '    ratio: 1.5'));
  assert.match(e.message, /^router\.params\.ratio: balanced-pd: params\.ratio must be a number in \[0, 1\) \(got 1\.5\) at line 8$/);
});

test('missing model, and a model that is neither preset nor folder', () => {
  const e = refusal(lines('engines:', '  - name: e0'));
  assert.is(e.message, 'model: required (a preset (tiny, llama-3.1-8b) or a checkpoint folder) at line 1');
  const f = refusal(lines('transport: host', 'model: ./weights', 'engines:', '  - name: e0'), 1, '/tmp/nowhere/t.yaml');
  assert.is(f.message, "model: './weights' is neither a preset (tiny, llama-3.1-8b) nor an existing folder (/tmp/nowhere/weights does not exist) at line 2");
});

test('a model folder resolves relative to the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'topo-'));
  mkdirSync(join(dir, 'ckpt'));
  const noConfig = refusal(lines('model: ckpt', 'engines:', '  - name: e0'), 0, join(dir, 't.yaml'));
  assert.is(noConfig.message, `model: model folder ${join(dir, 'ckpt')} has no config.json at line 1`);
  writeFileSync(join(dir, 'ckpt', 'config.json'), '{}');
  writeFileSync(join(dir, 't.yaml'), lines('model: ckpt', 'engines:', '  - name: e0'));
  assert.is(loadTopology(join(dir, 't.yaml'), { numGpus: 0 }).model, join(dir, 'ckpt'));
});

test('duplicate engine name', () => {
  const e = refusal(lines('model: tiny', 'engines:', '  - name: e0', '  - name: e1', '  - name: e0'));
  assert.is(e.message, "engines[2].name: duplicate engine name 'e0' (first at engines[0]) at line 5");
});

test('device that does not exist', () => {
  const e = refusal(lines('model: tiny', 'engines:', '  - name: e0', '    device: cuda:1'), 1);
  assert.is(e.message, "engines[0].device: device 'cuda:1' does not exist: this host has 1 GPU (cuda:0) at line 4");
  const three = refusal(lines('model: tiny', 'engines:', '  - name: e0', '    device: cuda:3'), 3);
  assert.is(three.message, "engines[0].device: device 'cuda:3' does not exist: this host has 3 GPUs (cuda:0 to cuda:2) at line 4");
  const none = refusal(lines('model: tiny', 'engines:', '  - name: e0', '    device: cuda:0'), 0);
  assert.is(none.message, "engines[0].device: device 'cuda:0' does not exist: this host has no GPU (nvidia-smi -L lists none) at line 4");
  const bad = refusal(lines('model: tiny', 'engines:', '  - name: e0', '    device: gpu0'));
  assert.is(bad.message, "engines[0].device: unknown device 'gpu0' (expected cpu or cuda:N) at line 4");
});

test('engine on an unknown host; devices on other hosts are not checked here', () => {
  const e = refusal(lines('model: tiny', 'hosts:', '  - name: gpu-b', 'engines:', '  - name: e0', '    host: gpu-c'));
  assert.is(e.message, "engines[0].host: unknown host 'gpu-c' (known: local, gpu-b; list it under hosts) at line 6");
  const t = parseTopology(lines('model: tiny', 'hosts:', '  - name: gpu-b', 'engines:', '  - name: e0', '    host: gpu-b', '    device: cuda:7'), undefined, { numGpus: 0 });
  assert.is(t.engines[0].device, 'cuda:7');
});

test('unknown fields (typos) name the key and suggest the field', () => {
  const e = refusal(lines('model: tiny', 'engines:', '  - name: e0', '    kvpages: 64', 'routr:', '  port: 1'));
  assert.is(e.message.split('\n')[0], "engines[0].kvpages: unknown field 'kvpages' (did you mean 'kvPages'?) at line 4");
  assert.match(e.message, /also: routr: unknown field 'routr' \(did you mean 'router'\?\) at line 5/);
});

test('wrong types and ranges', () => {
  assert.is(refusal(lines(...GOOD, 'router:', '  port: 70000')).message, 'router.port: expected an integer port in [0, 65535] (0 picks a free one), got 70000 at line 6');
  assert.is(refusal(lines('model: tiny', 'engines:', '  - name: e0', '    kvPages: 0')).message, 'engines[0].kvPages: expected an integer >= 1 or auto, got 0 at line 4');
  assert.is(refusal(lines('model: tiny', 'engines: []')).message, 'engines: needs at least one engine at line 2');
  assert.is(refusal(lines('model: tiny', 'transport: rdma', 'engines:', '  - name: e0')).message, "transport: unknown transport 'rdma' (expected auto, host, cuda-ipc or nvshmem) at line 2");
  assert.is(refusal(lines('model: tiny', 'engines:', '  - role: both')).message, 'engines[0].name: required (a name of letters, digits, _ . -) at line 3');
  assert.is(refusal('').message, '(top level): the topology file is empty at line 1');
});

test('cross-field checks: nobody generates, GPU transports with CPU engines, shared port', () => {
  assert.is(
    refusal(lines('model: tiny', 'engines:', '  - name: p0', '    role: prefill')).message,
    'engines: no engine can generate: every engine has role prefill (give one role decode or both) at line 3',
  );
  assert.is(
    refusal(lines('model: tiny', 'transport: nvshmem', 'engines:', '  - name: e0')).message,
    "transport: transport 'nvshmem' needs every engine on a GPU (engines[0] 'e0' is on cpu) at line 2",
  );
  assert.is(refusal(lines(...GOOD, 'router:', '  port: 7700')).message, 'router.port: router and control both use port 7700 at line 6');
});

test('nvshmem needs equal KV pools per host (nvshmem_malloc is collective)', () => {
  const t = (b: string) => lines('model: tiny', 'transport: nvshmem', 'engines:', '  - { name: p0, device: "cuda:0", kvPages: 64 }', `  - { name: d0, device: "cuda:0", kvPages: ${b} }`);
  assert.is(
    refusal(t('128'), 1).message,
    "engines[1].kvPages: transport 'nvshmem' needs equal KV pools on one host: 'd0' has kvPages 128, pageSize 16; 'p0' has kvPages 64, pageSize 16 at line 5",
  );
  assert.is(parseTopology(t('64'), undefined, { numGpus: 1 }).engines.length, 2);
});

test('loadTopology on a missing file', () => {
  try {
    loadTopology('/nonexistent/topology.yaml');
    assert.unreachable();
  } catch (e) {
    assert.ok(isMicroserveError(e, 'TOPOLOGY_INVALID'));
    assert.match((e as Error).message, /cannot read topology file \/nonexistent\/topology\.yaml/);
  }
});

test.run();
