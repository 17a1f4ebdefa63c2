/**
 * Sending a request trace: Poisson arrivals at a request rate (exponential gaps from a seeded
 * RNG, so every strategy sees the same arrival times), optionally capped at a number of requests
 * in flight (`maxConcurrency`: a request waits for a free slot and its clock starts when sent).
 * Rate `Infinity` sends everything at once (then only the cap paces it).
 */
import type { BenchRequest } from './datasets.ts';
import { sendCompletion, type RequestOutcome, type RequestTarget } from './client.ts';
import { Rng, subSeed } from './rng.ts';

export interface TraceOptions {
  /** Requests per second; Infinity: all at t = 0. */
  rate: number;
  /** [maxConcurrency=null] at most this many requests in flight. */
  maxConcurrency?: number | null;
  seed: number;
  /** Called as each request ends (progress). */
  onDone?: (o: RequestOutcome) => void;
}

export interface TraceResult {
  outcomes: RequestOutcome[];
  /** From the start of the point to the end of its last request. */
  durationS: number;
}

/** Arrival offsets in seconds for `n` requests at `rate` req/s (deterministic for a seed and rate). */
export function arrivalTimes(n: number, rate: number, seed: number): number[] {
  if (!Number.isFinite(rate)) return new Array(n).fill(0);
  const rng = new Rng(subSeed(seed, `arrivals@${rate}`));
  const out: number[] = [];
  let t = 0;
  for (let i = 0; i < n; i++) {
    out.push(t);
    t += rng.exponential(rate);
  }
  return out;
}

export async function runTrace(target: RequestTarget, requests: BenchRequest[], o: TraceOptions): Promise<TraceResult> {
  const arrivals = arrivalTimes(requests.length, o.rate, o.seed);
  const cap = o.maxConcurrency ?? Infinity;
  let inFlight = 0;
  const waiters: (() => void)[] = [];
  const acquire = async () => {
    while (inFlight >= cap) await new Promise<void>((r) => waiters.push(r));
    inFlight++;
  };
  const release = () => {
    inFlight--;
    waiters.shift()?.();
  };
  const start = performance.now();
  const pending: Promise<RequestOutcome>[] = [];
  for (let i = 0; i < requests.length; i++) {
    const wait = start + arrivals[i] * 1000 - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    await acquire();
    pending.push(
      sendCompletion(target, requests[i], start).then((out) => {
        release();
        o.onDone?.(out);
        return out;
      }),
    );
    // A burst (rate inf) launches every request in one go: yield to the event loop between small
    // groups, so responses, timers and the control connection's heartbeats are served meanwhile
    // (1000 long prompts launched without a yield blocked this loop past the 1.6 s heartbeat).
    if (i % 16 === 15) await new Promise((r) => setImmediate(r));
  }
  const outcomes = await Promise.all(pending);
  return { outcomes, durationS: (performance.now() - start) / 1000 };
}

/** Warm-up: `n` requests (the trace's first ones, cycled) sent at once; outcomes discarded. */
export async function warmUp(target: RequestTarget, requests: BenchRequest[], n: number): Promise<number> {
  if (n <= 0 || requests.length === 0) return 0;
  const start = performance.now();
  const outs = await Promise.all(Array.from({ length: n }, (_, i) => sendCompletion(target, requests[i % requests.length], start)));
  return outs.filter((x) => !x.isOk).length;
}
