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

/** What samplingFor reads of a step entry (scheduler.ts StepEntry). */
interface SampledEntry {
  req: { kind: string; sampling: { temperature: number; topP: number } | null; seed: number; outputIds: readonly number[]; totalLen: number };
  start: number;
  n: number;
}

/**
 * A step's sampling inputs, one row per entry: a generate chunk that reaches the request's last
 * token draws output token `outputIds.length` with the request's seed; other rows (prefill
 * chunks, sends) are greedy and their token is ignored.
 */
export function samplingFor(entries: SampledEntry[]): ForwardSampling {
  return packSampling(
    entries.map(({ req, start, n }) => {
      const s = req.kind === 'generate' && start + n === req.totalLen ? req.sampling : null;
      return s ? { temperature: s.temperature, topP: s.topP, seed: req.seed, step: req.outputIds.length } : { temperature: 0, topP: 1, seed: 0, step: 0 };
    }),
  );
}
