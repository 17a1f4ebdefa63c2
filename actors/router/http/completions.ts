/**
 * `POST /v1/completions` and `POST /v1/chat/completions`: validate, tokenize, run the request
 * through the runner, and answer as one JSON body or as server-sent events (`data: {chunk}` …
 * `data: [DONE]`). A client that disconnects aborts the request on every engine it reached.
 */
import type { Context } from 'hono';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import { randomBytes } from 'node:crypto';
import { MicroserveError } from '../../../common/errors.ts';
import type { FinishReason, SamplingParams } from '../../messages.ts';
import { checkTokenIds, type Tokenizer } from '../../text/tokenizer.ts';
import type { Admission } from '../admission.ts';
import type { Job, JobResult, RequestRunner } from '../request-runner.ts';
import { ApiError, badRequest, toApiError } from './errors.ts';
import { parseRequest, type ParsedRequest } from './parse.ts';
import { TextOutput } from './text-output.ts';

export interface CompletionDeps {
  runner: RequestRunner;
  /** KV capacity (400) and queue limit (429) checks, before the request runs. */
  admission: Admission;
  modelName: string;
  tokenizer: Tokenizer | null;
  contextLength: number;
  vocabSize: number | null;
  eosTokenIds: number[];
  defaultMaxTokens: number | null;
}

interface Meta {
  id: string;
  object: string;
  created: number;
  model: string;
  isChat: boolean;
  req: ParsedRequest;
  numPromptTokens: number;
}

export async function handleCompletion(c: Context, deps: CompletionDeps, kind: 'completion' | 'chat'): Promise<Response> {
  let body: unknown;
  try {
    body = JSON.parse(await c.req.text());
  } catch {
    throw badRequest('We could not parse the JSON body of your request: it is not valid JSON.', null, 'invalid_json');
  }
  const req = parseRequest(body, kind);
  if (req.model !== null && req.model !== deps.modelName) {
    throw new ApiError(404, `The model '${req.model}' does not exist (this server serves '${deps.modelName}')`, 'invalid_request_error', 'model', 'model_not_found');
  }
  deps.admission.checkQueue();
  const promptIds = tokenize(req, deps);
  const sampling = samplingFor(req, promptIds.length, deps);
  const isChat = kind === 'chat';
  const meta: Meta = {
    id: `${isChat ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`,
    object: isChat ? 'chat.completion' : 'text_completion',
    created: Math.floor(Date.now() / 1000),
    model: deps.modelName,
    isChat,
    req,
    numPromptTokens: promptIds.length,
  };
  const out = new TextOutput(deps.tokenizer?.createStreamDecoder() ?? null, req.stop);
  return req.stream ? streamed(c, deps, meta, promptIds, sampling, out) : whole(c, deps, meta, promptIds, sampling, out);
}

function tokenize(req: ParsedRequest, deps: CompletionDeps): number[] {
  const param = req.kind === 'chat' ? 'messages' : 'prompt';
  let ids: number[];
  if (typeof req.prompt === 'string' || req.messages) {
    if (!deps.tokenizer) throw badRequest(`this model has no tokenizer: give the prompt as token ids (${param})`, param, 'no_tokenizer');
    ids = req.messages ? deps.tokenizer.applyChatTemplate(req.messages) : deps.tokenizer.encode(req.prompt as string, { addBos: true });
  } else {
    ids = req.prompt as number[];
    if (deps.vocabSize !== null) {
      try {
        checkTokenIds(ids, deps.vocabSize);
      } catch (e) {
        throw badRequest((e as Error).message, param, 'bad_token');
      }
    }
  }
  if (ids.length >= deps.contextLength) {
    throw badRequest(`This model's maximum context length is ${deps.contextLength} tokens; the prompt has ${ids.length}.`, param, 'context_length_exceeded');
  }
  return ids;
}

function samplingFor(req: ParsedRequest, numPrompt: number, deps: CompletionDeps): SamplingParams {
  const room = deps.contextLength - numPrompt;
  const param = req.kind === 'chat' ? 'max_completion_tokens' : 'max_tokens';
  let maxTokens = req.maxTokens;
  if (maxTokens === null) {
    // the default never asks for more than the largest KV pool holds
    const kvRoom = (deps.admission.maxRequestTokens() ?? Infinity) - numPrompt;
    const fits = Math.max(1, Math.min(room, kvRoom));
    maxTokens = Math.min(fits, deps.defaultMaxTokens ?? (req.kind === 'chat' ? fits : 16));
  } else if (maxTokens > room) {
    throw badRequest(
      `This model's maximum context length is ${deps.contextLength} tokens; ${numPrompt + maxTokens} were requested (${numPrompt} in the prompt, ${maxTokens} to generate).`,
      param,
      'context_length_exceeded',
    );
  }
  deps.admission.checkFits(numPrompt, maxTokens, param);
  const stopTokenIds = [...new Set([...(req.ignoreEos ? [] : deps.eosTokenIds), ...req.stopTokenIds])];
  return { maxTokens, temperature: req.temperature, topP: req.topP, ...(req.seed !== undefined ? { seed: req.seed } : {}), stopTokenIds };
}

const finishReason = (out: TextOutput, r: JobResult): FinishReason => (out.stopped ? 'stop' : r.finish);

function usage(meta: Meta, numTokens: number) {
  return { prompt_tokens: meta.numPromptTokens, completion_tokens: numTokens, total_tokens: meta.numPromptTokens + numTokens };
}

async function whole(c: Context, deps: CompletionDeps, meta: Meta, promptIds: number[], sampling: SamplingParams, out: TextOutput): Promise<Response> {
  const ids: number[] = [];
  const job: Job = deps.runner.submit({ promptIds, sampling }, (tokens) => {
    if (out.stopped) return;
    ids.push(...tokens);
    out.push(tokens);
    if (out.stopped) job.cancel('stop');
  });
  const signal = c.req.raw.signal;
  const onAbort = () => job.cancel('abort');
  signal.addEventListener('abort', onAbort);
  const r = await job.done.finally(() => signal.removeEventListener('abort', onAbort));
  if (r.finish === 'error') throw toApiError(r.error);
  out.finish();
  const text = out.text;
  const choice: Record<string, unknown> = meta.isChat
    ? { index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: finishReason(out, r) }
    : { index: 0, text, logprobs: null, finish_reason: finishReason(out, r) };
  if (meta.req.returnTokenIds || !deps.tokenizer) choice.token_ids = ids;
  return c.json({ id: meta.id, object: meta.object, created: meta.created, model: meta.model, choices: [choice], usage: usage(meta, r.numTokens) });
}

function streamed(c: Context, deps: CompletionDeps, meta: Meta, promptIds: number[], sampling: SamplingParams, out: TextOutput): Response {
  return streamSSE(c, async (stream) => {
    const queue: number[][] = [];
    let wake: (() => void) | null = null;
    let result: JobResult | null = null;
    const job = deps.runner.submit({ promptIds, sampling }, (tokens) => {
      queue.push(tokens);
      wake?.();
    });
    stream.onAbort(() => job.cancel('abort'));
    void job.done.then((r) => {
      result = r;
      wake?.();
    });
    const withIds = meta.req.returnTokenIds || !deps.tokenizer;
    if (meta.isChat) await send(stream, chunk(meta, { role: 'assistant', content: '' }, null));
    for (;;) {
      while (queue.length > 0 && !stream.aborted) {
        const tokens = queue.shift()!;
        if (out.stopped) continue;
        const text = out.push(tokens);
        if (out.stopped) job.cancel('stop');
        if (text || withIds) await send(stream, chunk(meta, text, null, withIds ? tokens : undefined));
      }
      if (stream.aborted) return void (await job.done);
      if (result && queue.length === 0) break;
      await new Promise<void>((r) => (wake = r));
      wake = null;
    }
    const r = result as unknown as JobResult;
    const tail = out.finish();
    if (tail) await send(stream, chunk(meta, tail, null));
    if (r.finish === 'error') {
      await send(stream, toApiError(r.error ?? new MicroserveError('NO_ENGINE', 'the request failed')).body());
    } else {
      await send(stream, chunk(meta, meta.isChat ? {} : '', finishReason(out, r)));
      if (meta.req.includeUsage) await send(stream, { id: meta.id, object: chunkObject(meta), created: meta.created, model: meta.model, choices: [], usage: usage(meta, r.numTokens) });
    }
    await stream.writeSSE({ data: '[DONE]' });
  });
}

const chunkObject = (meta: Meta) => (meta.isChat ? 'chat.completion.chunk' : 'text_completion');

function chunk(meta: Meta, content: string | Record<string, unknown>, finish: FinishReason | null, tokenIds?: number[]) {
  const choice: Record<string, unknown> = meta.isChat
    ? { index: 0, delta: typeof content === 'string' ? { content } : content, logprobs: null, finish_reason: finish }
    : { index: 0, text: content, logprobs: null, finish_reason: finish };
  if (tokenIds) choice.token_ids = tokenIds;
  return { id: meta.id, object: chunkObject(meta), created: meta.created, model: meta.model, choices: [choice] };
}

function send(stream: SSEStreamingApi, obj: unknown): Promise<void> {
  return stream.writeSSE({ data: JSON.stringify(obj) });
}
