/**
 * A minimal OpenAI-style completions server for the bench client's unit tests: streams
 * `max_tokens` chunks of one token id each, the first after `firstDelayMs`, then one every
 * `gapMs`, and keeps microserve-named Prometheus counters. Requests whose prompt starts with
 * token id 0 get HTTP 500 (a failure the test can place). With `vocabSize`, `/v1/models` reports
 * it (and `baseVocabSize`) as microserve's router does, and a prompt id past it gets HTTP 400.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeServer {
  url: string;
  numRequests: number;
  /** The largest prompt token id received (-1 before any). */
  maxPromptId: number;
  close(): Promise<void>;
}

export async function startFakeServer(o: { firstDelayMs: number; gapMs: number; vocabSize?: number; baseVocabSize?: number }): Promise<FakeServer> {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const counts = { requests: 0, prompt: 0, gen: 0, e2eSum: 0 };
  const state = { numRequests: 0, maxPromptId: -1 };
  const card = { id: 'fake', ...(o.vocabSize ? { vocab_size: o.vocabSize, base_vocab_size: o.baseVocabSize ?? o.vocabSize } : {}) };
  const server: Server = createServer(async (req, res) => {
    if (req.method === 'GET' && req.url === '/v1/models') return void res.end(JSON.stringify({ object: 'list', data: [card] }));
    if (req.method === 'GET' && req.url === '/metrics') {
      res.setHeader('content-type', 'text/plain');
      return void res.end(
        [
          '# HELP microserve_requests_total x',
          `microserve_requests_total{finish="length"} ${counts.requests}`,
          `microserve_prompt_tokens_total ${counts.prompt}`,
          `microserve_generation_tokens_total ${counts.gen}`,
          `microserve_e2e_request_latency_seconds_sum ${counts.e2eSum}`,
          `microserve_e2e_request_latency_seconds_count ${counts.requests}`,
          '',
        ].join('\n'),
      );
    }
    let text = '';
    for await (const c of req) text += c;
    const body = JSON.parse(text);
    state.numRequests++;
    for (const id of body.prompt) state.maxPromptId = Math.max(state.maxPromptId, id);
    if (o.vocabSize && body.prompt.some((id: number) => id >= o.vocabSize!)) {
      res.statusCode = 400;
      return void res.end(JSON.stringify({ error: { message: 'token id outside the vocabulary' } }));
    }
    const t0 = performance.now();
    if (body.prompt[0] === 0) {
      res.statusCode = 500;
      return void res.end(JSON.stringify({ error: { message: 'planted failure' } }));
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const chunk = (o: object) => res.write(`data: ${JSON.stringify(o)}\n\n`);
    await sleep(o.firstDelayMs);
    for (let k = 0; k < body.max_tokens; k++) {
      if (k > 0) await sleep(o.gapMs);
      chunk({ choices: [{ index: 0, text: '', token_ids: [k], finish_reason: null }] });
    }
    chunk({ choices: [{ index: 0, text: '', finish_reason: 'length' }] });
    chunk({ choices: [], usage: { prompt_tokens: body.prompt.length, completion_tokens: body.max_tokens } });
    counts.requests++;
    counts.prompt += body.prompt.length;
    counts.gen += body.max_tokens;
    counts.e2eSum += (performance.now() - t0) / 1000;
    res.end('data: [DONE]\n\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get numRequests() {
      return state.numRequests;
    },
    get maxPromptId() {
      return state.maxPromptId;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
