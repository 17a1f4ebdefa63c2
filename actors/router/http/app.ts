/**
 * The router's HTTP API (hono): OpenAI-compatible `/v1/*`, vLLM's `/tokenize`, `/detokenize` and
 * `/version`, plus `/health` and `/metrics`. docs/API.md documents every endpoint and field.
 * `/v1/*` checks the API key (when one is set) and caps the body size; errors always leave in
 * OpenAI's shape, and a refused request never affects the next one.
 */
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { log } from '../../../common/log.ts';
import type { EnginePool } from '../engine-pool.ts';
import type { RouterMetrics } from '../metrics.ts';
import { handleCompletion, type CompletionDeps } from './completions.ts';
import { ApiError, toApiError } from './errors.ts';
import { handleDetokenize, handleTokenize } from './tokenize.ts';

/** This package's version (package.json), as /version reports it. */
const VERSION: string = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')).version;

export interface AppDeps extends CompletionDeps {
  pool: EnginePool;
  metrics: RouterMetrics;
  apiKey: string | null;
  maxBodyBytes: number;
}

function keyMatches(given: string, key: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(key);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function buildApp(deps: AppDeps): Hono {
  const app = new Hono();
  const created = Math.floor(Date.now() / 1000);
  const fail = (e: ApiError) => {
    deps.metrics.httpErrors.inc({ status: String(e.status) });
    return new Response(JSON.stringify(e.body()), { status: e.status, headers: { 'content-type': 'application/json', ...e.headers } });
  };

  app.onError((err) => {
    const e = toApiError(err);
    if (e.status >= 500) log.warn('request failed', { status: e.status, error: err });
    return fail(e);
  });
  app.notFound((c) => fail(new ApiError(404, `no route for ${c.req.method} ${c.req.path}`, 'invalid_request_error', null, 'unknown_url')));

  const guarded = ['/v1/*', '/tokenize', '/detokenize'];
  for (const path of guarded) app.use(path, async (c, next) => {
    if (!deps.apiKey) return next();
    const auth = c.req.header('authorization') ?? '';
    const given = auth.startsWith('Bearer ') ? auth.slice(7).trim() : '';
    if (!given || !keyMatches(given, deps.apiKey)) {
      return fail(new ApiError(401, given ? 'Incorrect API key provided.' : 'Missing API key: send Authorization: Bearer <key>.', 'invalid_request_error', null, 'invalid_api_key'));
    }
    return next();
  });
  for (const path of guarded) {
    app.use(
      path,
      bodyLimit({
        maxSize: deps.maxBodyBytes,
        onError: () => fail(new ApiError(413, `The request body is larger than ${deps.maxBodyBytes} bytes.`, 'invalid_request_error', null, 'request_too_large')),
      }),
    );
  }

  app.post('/v1/completions', (c) => handleCompletion(c, deps, 'completion'));
  app.post('/v1/chat/completions', (c) => handleCompletion(c, deps, 'chat'));
  app.post('/tokenize', (c) => handleTokenize(c, deps));
  app.post('/detokenize', (c) => handleDetokenize(c, deps));
  app.get('/version', (c) => c.json({ version: VERSION }));
  // vocab_size / base_vocab_size (microserve's): the ids a prompt may hold, and the ordinary text
  // tokens among them (no special tokens); `microserve bench` draws random prompts from the latter
  const model = () => ({
    id: deps.modelName,
    object: 'model',
    created,
    owned_by: 'microserve',
    max_model_len: deps.contextLength,
    vocab_size: deps.vocabSize,
    base_vocab_size: deps.tokenizer ? Math.min(deps.tokenizer.baseVocabSize, deps.vocabSize ?? Infinity) : deps.vocabSize,
  });
  app.get('/v1/models', (c) => c.json({ object: 'list', data: [model()] }));
  app.get('/v1/models/:id', (c) =>
    c.req.param('id') === deps.modelName ? c.json(model()) : fail(new ApiError(404, `The model '${c.req.param('id')}' does not exist`, 'invalid_request_error', 'model', 'model_not_found')),
  );

  app.get('/health', (c) => {
    // the router's engine pool polls every engine's status: this is their real state, not the plan's
    const h = deps.pool.health();
    const body = h.status === 'starting' ? { status: h.status, waitingFor: h.down } : h.status === 'ok' ? { status: h.status } : { status: h.status, down: h.down };
    return c.json(body, h.isServing ? 200 : 503);
  });
  app.get('/metrics', async (c) => c.body(await deps.metrics.text(), 200, { 'content-type': deps.metrics.contentType }));
  return app;
}
