/**
 * The native backend's options (ms::BackendOptions): what the caller gives, checked with a schema,
 * over the environment knobs of common/env.ts. Resolved once per backend, before it is built.
 */
import { z } from 'zod';
import { CPU_ISAS, env } from '../common/env.ts';
import { MicroserveError } from '../common/errors.ts';
import type { NativeBackendArgs } from './addon.ts';
import type { NativeOptions } from './backend.ts';

const NATIVE_OPTIONS = z
  .object({
    cpuIsa: z.enum(CPU_ISAS),
    cudaGraphs: z.boolean(),
    pdl: z.boolean(),
    decodeClusterCap: z.number().int().min(0).max(1024),
    nvshmemPut: z.boolean(),
  })
  .partial()
  .strict();

/**
 * `given` (untrusted: a field of openModel's options) over the knobs' values; BAD_CONFIG naming
 * `native.<field>` when a field is unknown or of the wrong type.
 */
export function resolveNativeOptions(given: unknown, numThreads: number): NativeBackendArgs {
  const r = NATIVE_OPTIONS.safeParse(given ?? {});
  if (!r.success) {
    const issue = r.error.issues[0];
    const path = issue.code === 'unrecognized_keys' ? issue.keys[0] : issue.path.join('.');
    throw new MicroserveError('BAD_CONFIG', `option native${path ? `.${path}` : ''}: ${issue.message}`, { field: `native${path ? `.${path}` : ''}` });
  }
  const fromEnv: NativeOptions = {
    cpuIsa: env('cpuIsa'),
    cudaGraphs: env('cudaGraphs'),
    pdl: env('pdl'),
    decodeClusterCap: env('decodeClusterCap'),
    nvshmemPut: env('nvshmemPut'),
  };
  const set = Object.fromEntries(Object.entries(r.data).filter(([, v]) => v !== undefined));
  return { numThreads, ...fromEnv, ...set };
}

/** NVSHMEM_SYMMETRIC_SIZE for a pool of `poolBytes`: the pool + 256 MiB, in 2 MiB steps (NVSHMEM's default heap is 1 GiB). */
export function nvshmemHeapBytes(poolBytes: number): number {
  const step = 2 << 20;
  return Math.ceil((poolBytes + (256 << 20)) / step) * step;
}
