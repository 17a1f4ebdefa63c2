/**
 * Metric math over one point's outcomes, as `vllm bench serve` defines it:
 * - percentiles interpolate linearly between order statistics (numpy's default);
 * - TTFT, TPOT, E2EL are per successful request; ITL pools every gap of every request;
 * - throughputs divide by the point's duration (first send to last end): completed requests,
 *   their output tokens, and their input + output tokens;
 * - goodput: completed requests that meet every given SLO (TTFT, TPOT, E2EL ≤ the limit, in ms),
 *   per second.
 */
import type { RequestOutcome } from './client.ts';

export interface Stats {
  mean: number;
  median: number;
  p90: number;
  p99: number;
  /** Population standard deviation. */
  std: number;
}

export type GoodputSlo = Partial<Record<'ttft' | 'tpot' | 'e2el', number>>;

export interface PointMetrics {
  completed: number;
  failed: number;
  /** Error message → count (first 120 chars of each message). */
  errors: Record<string, number>;
  durationS: number;
  totalInputTokens: number;
  totalOutputTokens: number;
  requestThroughput: number;
  outputThroughput: number;
  totalTokenThroughput: number;
  /** Requests per second meeting every SLO; null without --goodput. */
  goodput: number | null;
  ttftMs: Stats;
  tpotMs: Stats;
  itlMs: Stats;
  e2elMs: Stats;
}

/** Linear-interpolated percentile of `sorted` (ascending); NaN for an empty list. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

export function stats(values: readonly number[]): Stats {
  if (values.length === 0) return { mean: NaN, median: NaN, p90: NaN, p99: NaN, std: NaN };
  const s = [...values].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  const std = Math.sqrt(s.reduce((a, b) => a + (b - mean) ** 2, 0) / s.length);
  return { mean, median: percentile(s, 50), p90: percentile(s, 90), p99: percentile(s, 99), std };
}

/** `['ttft:500', 'e2el:2000']` → `{ ttft: 500, e2el: 2000 }` (ms). */
export function parseGoodput(args: readonly string[]): GoodputSlo {
  const slo: GoodputSlo = {};
  for (const a of args.flatMap((x) => x.split(/[\s,]+/)).filter(Boolean)) {
    const m = /^(ttft|tpot|e2el):(\d+(?:\.\d+)?)$/.exec(a);
    if (!m) throw new RangeError(`--goodput: '${a}' is not KEY:MS with KEY one of ttft, tpot, e2el`);
    slo[m[1] as keyof GoodputSlo] = Number(m[2]);
  }
  return slo;
}

export function meetsSlo(o: RequestOutcome, slo: GoodputSlo): boolean {
  if (!o.isOk) return false;
  if (slo.ttft !== undefined && !((o.ttftMs ?? Infinity) <= slo.ttft)) return false;
  // a one-token request has no TPOT: nothing to violate
  if (slo.tpot !== undefined && o.tpotMs !== null && o.tpotMs > slo.tpot) return false;
  if (slo.e2el !== undefined && o.e2elMs > slo.e2el) return false;
  return true;
}

export function pointMetrics(outcomes: readonly RequestOutcome[], durationS: number, slo: GoodputSlo | null): PointMetrics {
  const ok = outcomes.filter((o) => o.isOk);
  const errors: Record<string, number> = {};
  for (const o of outcomes) if (!o.isOk) errors[(o.error ?? 'unknown').slice(0, 120)] = (errors[(o.error ?? 'unknown').slice(0, 120)] ?? 0) + 1;
  const totalInputTokens = ok.reduce((a, o) => a + o.promptTokens, 0);
  const totalOutputTokens = ok.reduce((a, o) => a + o.outputTokens, 0);
  const hasSlo = slo !== null && Object.keys(slo).length > 0;
  return {
    completed: ok.length,
    failed: outcomes.length - ok.length,
    errors,
    durationS,
    totalInputTokens,
    totalOutputTokens,
    requestThroughput: ok.length / durationS,
    outputThroughput: totalOutputTokens / durationS,
    totalTokenThroughput: (totalInputTokens + totalOutputTokens) / durationS,
    goodput: hasSlo ? ok.filter((o) => meetsSlo(o, slo!)).length / durationS : null,
    ttftMs: stats(ok.map((o) => o.ttftMs!).filter((x) => x !== null)),
    tpotMs: stats(ok.map((o) => o.tpotMs).filter((x): x is number => x !== null)),
    itlMs: stats(ok.flatMap((o) => o.itlMs)),
    e2elMs: stats(ok.map((o) => o.e2elMs)),
  };
}
