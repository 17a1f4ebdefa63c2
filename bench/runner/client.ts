/**
 * One benchmark request, timed by the client: `POST /v1/completions` with the prompt as token
 * ids, `max_tokens` = the output length, `ignore_eos`, greedy unless `--extra-body` says otherwise,
 * streaming with `token_ids` in each chunk. Times come from this process's clock (performance.now):
 * - TTFT: send → first chunk that carries a token;
 * - ITL: gap between consecutive token-carrying chunks (one gap per chunk, as vLLM's client
 *   counts it; a chunk may carry several tokens when the server batches them);
 * - E2EL: send → end of the stream (`[DONE]`);
 * - TPOT: (E2EL − TTFT) / (output tokens − 1), for requests with more than one token.
 * A request fails on an HTTP error, an error event in the stream, a stream that ends without
 * `[DONE]`, a transport error or the timeout.
 */
import type { BenchRequest } from './datasets.ts';

export interface RequestTarget {
  /** e.g. `http://127.0.0.1:8000` (no trailing /v1). */
  baseUrl: string;
  model: string;
  apiKey?: string;
  /** [timeoutMs=600000] whole-request limit. */
  timeoutMs?: number;
  /** Fields added to every request body (`--extra-body`, e.g. `response_format`); never the bench's own fields. */
  extraBody?: Record<string, unknown>;
}

/** The body fields the bench sets itself: `--extra-body` may not replace them (its timings and counts depend on them). */
export const OWN_BODY_FIELDS = ['model', 'prompt', 'max_tokens', 'ignore_eos', 'stream', 'stream_options', 'return_token_ids'] as const;

export interface RequestOutcome {
  isOk: boolean;
  error?: string;
  /** Send time, ms since the point started. */
  startMs: number;
  ttftMs: number | null;
  e2elMs: number;
  itlMs: number[];
  tpotMs: number | null;
  promptTokens: number;
  /** Token ids received (each chunk's `token_ids`). */
  outputTokens: number;
  /** The server's `usage.completion_tokens`, when it sent usage. */
  usageOutputTokens: number | null;
}

export async function sendCompletion(t: RequestTarget, req: BenchRequest, pointStart: number): Promise<RequestOutcome> {
  const t0 = performance.now();
  const out: RequestOutcome = {
    isOk: false,
    startMs: t0 - pointStart,
    ttftMs: null,
    e2elMs: 0,
    itlMs: [],
    tpotMs: null,
    promptTokens: req.promptIds.length,
    outputTokens: 0,
    usageOutputTokens: null,
  };
  const body = {
    temperature: 0,
    ...t.extraBody,
    model: t.model,
    prompt: req.promptIds,
    max_tokens: req.outputLen,
    ignore_eos: true,
    stream: true,
    stream_options: { include_usage: true },
    return_token_ids: true,
  };
  let last = t0;
  let isDone = false;
  try {
    const res = await fetch(`${t.baseUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(t.apiKey ? { authorization: `Bearer ${t.apiKey}` } : {}) },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(t.timeoutMs ?? 600_000),
    });
    if (!res.ok || !res.body) {
      out.error = `HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`;
      return finish(out, t0);
    }
    const decoder = new TextDecoder();
    let buf = '';
    for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) {
      const now = performance.now();
      buf += decoder.decode(part, { stream: true });
      let cut: number;
      while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + (buf[cut] === '\r' ? 4 : 2));
        const data = event
          .split(/\r?\n/)
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).trimStart())
          .join('\n');
        if (!data) continue;
        if (data === '[DONE]') {
          isDone = true;
          continue;
        }
        const msg = JSON.parse(data);
        if (msg.error) {
          out.error = `stream error: ${msg.error.message ?? JSON.stringify(msg.error)}`;
          continue;
        }
        if (msg.usage) out.usageOutputTokens = msg.usage.completion_tokens ?? null;
        const n = (msg.choices?.[0]?.token_ids as number[] | undefined)?.length ?? 0;
        if (n === 0) continue;
        if (out.ttftMs === null) out.ttftMs = now - t0;
        else out.itlMs.push(now - last);
        last = now;
        out.outputTokens += n;
      }
    }
    if (!isDone && !out.error) out.error = 'the stream ended without [DONE]';
    out.isOk = isDone && !out.error;
  } catch (e) {
    out.error = (e as Error).name === 'TimeoutError' ? `timed out after ${t.timeoutMs ?? 600_000} ms` : `${(e as Error).message}${(e as { cause?: Error }).cause ? `: ${(e as { cause: Error }).cause.message}` : ''}`;
  }
  return finish(out, t0);
}

function finish(out: RequestOutcome, t0: number): RequestOutcome {
  out.e2elMs = performance.now() - t0;
  if (out.isOk && out.ttftMs !== null && out.outputTokens > 1) out.tpotMs = (out.e2elMs - out.ttftMs) / (out.outputTokens - 1);
  return out;
}
