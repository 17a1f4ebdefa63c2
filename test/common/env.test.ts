// The environment registry: defaults, parsing, errors that name the variable, and the native
// options it feeds (explicit options over the knobs).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { KNOBS, env, envIsSet } from '../../common/env.ts';
import { isMicroserveError } from '../../common/errors.ts';
import { nvshmemHeapBytes, resolveNativeOptions } from '../../native/options.ts';

/** Runs f with the variables set (undefined: unset), then restores them. */
function withEnv<T>(vars: Record<string, string | undefined>, f: () => T): T {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const apply = (v: Record<string, string | undefined>) => {
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) delete process.env[k];
      else process.env[k] = x;
    }
  };
  apply(vars);
  try {
    return f();
  } finally {
    apply(saved);
  }
}

function throwsBadConfig(f: () => unknown, needle: string): void {
  try {
    f();
  } catch (e) {
    assert.ok(isMicroserveError(e, 'BAD_CONFIG'), String(e));
    assert.ok((e as Error).message.includes(needle), (e as Error).message);
    return;
  }
  assert.unreachable(`expected BAD_CONFIG naming ${needle}`);
}

test('every knob is declared once, with a MICROSERVE_ or MS_ name and a doc line', () => {
  const names = Object.values(KNOBS).map((k) => k.name);
  assert.is(new Set(names).size, names.length);
  for (const k of Object.values(KNOBS)) {
    assert.ok(/^(MICROSERVE|MS)_[A-Z0-9_]+$/.test(k.name), k.name);
    assert.ok(k.doc.length > 10, k.name);
  }
});

test('unset or empty gives the default; values parse by type', () => {
  withEnv({ MS_CUDA_GRAPHS: undefined, MS_DECODE_CLUSTER: '', MS_CPU_ISA: undefined, MICROSERVE_BIND: undefined }, () => {
    assert.is(env('cudaGraphs'), true);
    assert.is(env('decodeClusterCap'), 16);
    assert.is(env('cpuIsa'), 'auto');
    assert.is(env('bindHost'), '127.0.0.1');
    assert.is(envIsSet('cudaGraphs'), false);
  });
  withEnv({ MS_CUDA_GRAPHS: '0', MS_DECODE_CLUSTER: '8', MS_CPU_ISA: 'avx2', MS_NVSHMEM_PUT: 'true', MICROSERVE_NUM_GPUS: '3' }, () => {
    assert.is(env('cudaGraphs'), false);
    assert.is(env('decodeClusterCap'), 8);
    assert.is(env('cpuIsa'), 'avx2');
    assert.is(env('nvshmemPut'), true);
    assert.is(env('numGpus'), 3);
    assert.is(envIsSet('cudaGraphs'), true);
  });
});

test('a malformed value is BAD_CONFIG naming the variable', () => {
  withEnv({ MS_PDL: 'maybe' }, () => throwsBadConfig(() => env('pdl'), 'MS_PDL'));
  withEnv({ MS_DECODE_CLUSTER: '-1' }, () => throwsBadConfig(() => env('decodeClusterCap'), 'MS_DECODE_CLUSTER'));
  withEnv({ MS_CPU_ISA: 'sse9' }, () => throwsBadConfig(() => env('cpuIsa'), 'MS_CPU_ISA'));
  withEnv({ MICROSERVE_LOG: 'loud' }, () => throwsBadConfig(() => env('logLevel'), 'MICROSERVE_LOG'));
});

test('native options: explicit fields over the knobs, over the defaults', () => {
  withEnv({ MS_PDL: '0', MS_CUDA_GRAPHS: undefined, MS_DECODE_CLUSTER: undefined, MS_CPU_ISA: undefined, MS_NVSHMEM_PUT: undefined }, () => {
    assert.equal(resolveNativeOptions(undefined, 2), { numThreads: 2, cpuIsa: 'auto', cudaGraphs: true, pdl: false, decodeClusterCap: 16, nvshmemPut: false });
    assert.equal(resolveNativeOptions({ pdl: true, decodeClusterCap: 0 }, 0), { numThreads: 0, cpuIsa: 'auto', cudaGraphs: true, pdl: true, decodeClusterCap: 0, nvshmemPut: false });
  });
  throwsBadConfig(() => resolveNativeOptions({ cudaGraphs: 1 }, 0), 'native.cudaGraphs');
  throwsBadConfig(() => resolveNativeOptions({ decodeClusterCap: 2.5 }, 0), 'native.decodeClusterCap');
  throwsBadConfig(() => resolveNativeOptions({ graphs: false }, 0), 'native.graphs');
  throwsBadConfig(() => resolveNativeOptions('fast', 0), 'native');
});

test('NVSHMEM heap: the pool plus 256 MiB, in 2 MiB steps', () => {
  assert.is(nvshmemHeapBytes(0), 256 << 20);
  assert.is(nvshmemHeapBytes(1), (256 << 20) + (2 << 20));
  assert.is(nvshmemHeapBytes(17 * 1024 ** 3), 17 * 1024 ** 3 + (256 << 20));
});

test.run();
