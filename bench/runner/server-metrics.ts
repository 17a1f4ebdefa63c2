/**
 * The server's own view of a point, for cross-checking the client: the router's Prometheus
 * counters and histogram sums (`GET /metrics`) scraped before and after the point; the
 * difference covers exactly the point's requests when nothing else uses the server.
 */

/** Metric name (with labels, as written) → value, from Prometheus text format. */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

/** Sum of every series of `name` (all label sets), optionally filtered by a label substring. */
export function sumSeries(m: Map<string, number>, name: string, labelFilter?: string): number {
  let s = 0;
  for (const [k, v] of m) {
    const base = k.split('{')[0];
    if (base === name && (!labelFilter || k.includes(labelFilter))) s += v;
  }
  return s;
}

export interface ServerCounts {
  /** Requests the router finished (every finish reason). */
  requests: number;
  requestsByFinish: Record<string, number>;
  promptTokens: number;
  generationTokens: number;
  httpErrors: number;
  ttftSumS: number;
  ttftCount: number;
  tpotSumS: number;
  tpotCount: number;
  e2elSumS: number;
  e2elCount: number;
  /** KV transfers the engines report, by transport (cumulative gauges, polled every ~0.5 s). */
  transfersByTransport: Record<string, number>;
}

const P = 'microserve_';

export function serverCounts(m: Map<string, number>): ServerCounts {
  const byFinish: Record<string, number> = {};
  const transfers: Record<string, number> = {};
  for (const [k, v] of m) {
    const f = /^microserve_requests_total\{.*finish="([^"]+)"/.exec(k);
    if (f) byFinish[f[1]] = (byFinish[f[1]] ?? 0) + v;
    const t = /^microserve_engine_kv_transfers\{.*transport="([^"]+)"/.exec(k);
    if (t) transfers[t[1]] = (transfers[t[1]] ?? 0) + v;
  }
  return {
    requests: sumSeries(m, `${P}requests_total`),
    requestsByFinish: byFinish,
    promptTokens: sumSeries(m, `${P}prompt_tokens_total`),
    generationTokens: sumSeries(m, `${P}generation_tokens_total`),
    httpErrors: sumSeries(m, `${P}http_errors_total`),
    ttftSumS: sumSeries(m, `${P}time_to_first_token_seconds_sum`),
    ttftCount: sumSeries(m, `${P}time_to_first_token_seconds_count`),
    tpotSumS: sumSeries(m, `${P}time_per_output_token_seconds_sum`),
    tpotCount: sumSeries(m, `${P}time_per_output_token_seconds_count`),
    e2elSumS: sumSeries(m, `${P}e2e_request_latency_seconds_sum`),
    e2elCount: sumSeries(m, `${P}e2e_request_latency_seconds_count`),
    transfersByTransport: transfers,
  };
}

/** What the server saw during a point (after − before). */
export interface ServerPoint {
  requests: number;
  requestsByFinish: Record<string, number>;
  promptTokens: number;
  generationTokens: number;
  httpErrors: number;
  ttftMeanMs: number | null;
  tpotMeanMs: number | null;
  e2elMeanMs: number | null;
  /** KV transfers during the point, by transport (approximate: engine gauges lag ~0.5 s). */
  transfersByTransport: Record<string, number>;
}

export function serverDelta(a: ServerCounts, b: ServerCounts): ServerPoint {
  const mean = (sum: number, n: number) => (n > 0 ? (sum / n) * 1000 : null);
  const byFinish: Record<string, number> = {};
  for (const k of new Set([...Object.keys(a.requestsByFinish), ...Object.keys(b.requestsByFinish)])) {
    const d = (b.requestsByFinish[k] ?? 0) - (a.requestsByFinish[k] ?? 0);
    if (d !== 0) byFinish[k] = d;
  }
  return {
    requests: b.requests - a.requests,
    requestsByFinish: byFinish,
    promptTokens: b.promptTokens - a.promptTokens,
    generationTokens: b.generationTokens - a.generationTokens,
    httpErrors: b.httpErrors - a.httpErrors,
    ttftMeanMs: mean(b.ttftSumS - a.ttftSumS, b.ttftCount - a.ttftCount),
    tpotMeanMs: mean(b.tpotSumS - a.tpotSumS, b.tpotCount - a.tpotCount),
    e2elMeanMs: mean(b.e2elSumS - a.e2elSumS, b.e2elCount - a.e2elCount),
    transfersByTransport: Object.fromEntries(
      Object.entries(b.transfersByTransport ?? {})
        .map(([k, v]) => [k, v - (a.transfersByTransport?.[k] ?? 0)] as const)
        .filter(([, d]) => d !== 0),
    ),
  };
}

/** Scrapes `<baseUrl>/metrics`; null when the server has none (not a microserve router). */
export async function scrape(baseUrl: string): Promise<ServerCounts | null> {
  try {
    const res = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
    if (!res.ok) return null;
    return serverCounts(parsePrometheus(await res.text()));
  } catch {
    return null;
  }
}
