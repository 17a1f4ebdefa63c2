/**
 * How many GPUs this host has, for the loader's `cuda:N` check: the lines `nvidia-smi -L` prints
 * (`GPU 0: NVIDIA H100 ...`). No `nvidia-smi`, or one that fails, means 0 GPUs. Cached per
 * process; `MICROSERVE_NUM_GPUS` overrides (tests, or hosts where nvidia-smi is not on PATH).
 */
import { execFileSync } from 'node:child_process';
import { env } from '../common/env.ts';

let cached: string[] | null = null;

/** Names of the GPUs `nvidia-smi -L` lists, in index order ([] without nvidia-smi). */
export function listGpus(): string[] {
  if (cached) return cached;
  try {
    const out = execFileSync('nvidia-smi', ['-L'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] });
    cached = out
      .split('\n')
      .filter((l) => /^GPU \d+:/.test(l))
      .map((l) => l.replace(/^GPU \d+:\s*/, '').replace(/\s*\(UUID:.*\)\s*$/, ''));
  } catch {
    cached = [];
  }
  return cached;
}

/** Number of GPUs on this host (see the module comment). */
export function detectGpuCount(): number {
  return env('numGpus') ?? listGpus().length;
}
