/**
 * A step's sampling inputs for the backend, which samples on the device (`forwardTokens`; the
 * algorithm is defined in native/src/common/sampling.h, and test/shared/sampling-reference.ts
 * is the TypeScript oracle the tests hold the backends to).
 */
import type { ForwardSampling } from '../../native/backend.ts';

/** One sequence's sampling inputs. */
export interface SampleRow {
  temperature: number;
  topP: number;
  seed: number;
  step: number;
}

/** The per-sequence arrays a backend takes (ForwardBatch.sampling). */
export function packSampling(rows: SampleRow[]): ForwardSampling {
  const n = rows.length;
  const s: ForwardSampling = { temperature: new Float32Array(n), topP: new Float32Array(n), seed: new Uint32Array(n), step: new Uint32Array(n) };
  rows.forEach((r, i) => {
    s.temperature[i] = r.temperature;
    s.topP[i] = r.topP;
    s.seed[i] = r.seed;
    s.step[i] = r.step;
  });
  return s;
}
