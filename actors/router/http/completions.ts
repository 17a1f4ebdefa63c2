/**
 * `POST /v1/completions` and `POST /v1/chat/completions`: validate (schema), tokenize every
 * prompt, run `n` choices per prompt through the runner, and answer as one JSON body or as
 * server-sent events (stream.ts). A client that disconnects aborts every choice on every engine.
 * n > 1 computes the prompt once: see run-choices.ts.
 */
import type { Context } from 'hono';
import { randomBytes } from 'node:crypto';
import type { SamplingParams } from '../../messages.ts';
import type { JobResult } from '../request-runner.ts';
import { Choice } from './choice.ts';
import { ApiError, badRequest, toApiError } from './errors.ts';
import { chatLogprobs, completionLogprobs, concatCompletionLogprobs, echoCompletionLogprobs, vllmPromptLogprobs, type PromptLogprobs } from './logprobs.ts';
import { parseRequest, type ParsedRequest } from './parse.ts';
import { checkContext, checkIds, encodeChat, encodeText } from './prompt-ids.ts';
import { runChoices, usage, type CompletionDeps, type Meta, type PromptRun } from './run-choices.ts';
import { streamed } from './stream.ts';
import type { StructuredOutput } from './structured-output.ts';
import { ToolCallOutput } from './tool-calls.ts';

export type { CompletionDeps } from './run-choices.ts';

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
  checkTokenFields(req, deps);
  if (req.tools?.tools.length && deps.tokenizer && !deps.tokenizer.supportsTools) {
    throw badRequest(`'tools': the chat template of ${deps.modelName} has no tool support`, 'tools', 'unsupported_parameter');
  }
  const grammar = grammarOf(req);
  if (grammar) await deps.grammarChecker.check(grammar.spec, grammar.param);
  deps.admission.checkQueue();
  const runs: PromptRun[] = [];
  for (const p of await promptIds(req, deps)) {
    runs.push({ ...p, sampling: samplingFor(req, p.ids.length, deps), ...(req.promptLogprobs !== null ? { promptLogprobs: req.promptLogprobs } : {}) });
  }
  const isChat = kind === 'chat';
  const meta: Meta = {
    id: `${isChat ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`,
    object: isChat ? 'chat.completion' : 'text_completion',
    created: Math.floor(Date.now() / 1000),
    model: deps.modelName,
    isChat,
    req,
    numPromptTokens: runs.reduce((a, r) => a + r.ids.length, 0),
  };
  const choices = runs.flatMap((r, p) => r.sampling.map((_, i) => newChoice(req, deps, p * req.n + i, req.echo ? r.text : '')));
  return req.stream ? streamed(c, deps, meta, runs, choices) : whole(c, deps, meta, runs, choices);
}

function checkTokenFields(req: ParsedRequest, deps: CompletionDeps): void {
  if (deps.vocabSize === null) return;
  const v = deps.vocabSize;
  const bias = req.logitBias.find(([t]) => t >= v);
  if (bias) throw badRequest(`'logit_bias': ${bias[0]} is not a token id in [0, ${v})`, 'logit_bias', 'bad_token');
  const stop = req.stopTokenIds.find((t) => t >= v);
  if (stop !== undefined) throw badRequest(`'stop_token_ids': ${stop} is not a token id in [0, ${v})`, 'stop_token_ids', 'bad_token');
}

async function promptIds(req: ParsedRequest, deps: CompletionDeps): Promise<{ ids: number[]; text: string }[]> {
  if (req.messages) {
    const tools = req.tools?.tools;
    const ids = await encodeChat(deps, req.messages, { addGenerationPrompt: req.addGenerationPrompt, continueFinalMessage: req.continueFinalMessage, ...(tools ? { tools } : {}) });
    checkContext(deps, ids.length, 'messages');
    return [{ ids, text: '' }];
  }
  const out: { ids: number[]; text: string }[] = [];
  for (const [i, p] of req.prompts.entries()) {
    const param = req.prompts.length > 1 ? `prompt[${i}]` : 'prompt';
    const ids = typeof p === 'string' ? await encodeText(deps, p, true, param) : checkIds(deps, p, param);
    checkContext(deps, ids.length, param);
    const text = typeof p === 'string' ? p : req.echo && deps.tokenizer ? deps.tokenizer.decode(p, { skipSpecialTokens: req.skipSpecialTokens }) : '';
    out.push({ ids, text });
  }
  return out;
}

/** The engine's sampling for each of the n choices of one prompt. */
function samplingFor(req: ParsedRequest, numPrompt: number, deps: CompletionDeps): SamplingParams[] {
  const room = deps.contextLength - numPrompt;
  let maxTokens = req.maxTokens;
  if (maxTokens === null) {
    // the default never asks for more than the largest KV pool holds
    const kvRoom = (deps.admission.maxRequestTokens() ?? Infinity) - numPrompt;
    const fits = Math.max(1, Math.min(room, kvRoom));
    maxTokens = Math.min(fits, deps.defaultMaxTokens ?? (req.kind === 'chat' ? fits : 16));
  } else if (maxTokens > room) {
    throw badRequest(
      `This model's maximum context length is ${deps.contextLength} tokens; ${numPrompt + maxTokens} were requested (${numPrompt} in the prompt, ${maxTokens} to generate).`,
      req.maxTokensParam,
      'context_length_exceeded',
    );
  }
  deps.admission.checkFits(numPrompt, maxTokens, req.maxTokensParam);
  const stopTokenIds = [...new Set([...(req.ignoreEos ? [] : deps.eosTokenIds), ...req.stopTokenIds])];
  const base: SamplingParams = {
    maxTokens,
    temperature: req.temperature,
    topP: req.topP,
    stopTokenIds,
    ...(req.topK > 0 ? { topK: req.topK } : {}),
    ...(req.minP > 0 ? { minP: req.minP } : {}),
    ...(req.repetitionPenalty !== 1 ? { repetitionPenalty: req.repetitionPenalty } : {}),
    ...(req.presencePenalty !== 0 ? { presencePenalty: req.presencePenalty } : {}),
    ...(req.frequencyPenalty !== 0 ? { frequencyPenalty: req.frequencyPenalty } : {}),
    ...(req.logitBias.length ? { logitBias: req.logitBias } : {}),
    ...(req.minTokens > 0 ? { minTokens: req.minTokens } : {}),
    ...(req.logprobs !== null ? { logprobs: req.logprobs } : {}),
  };
  const grammar = grammarOf(req);
  if (grammar) base.grammar = grammar.spec;
  return Array.from({ length: req.n }, (_, i) => (req.seed !== undefined ? { ...base, seed: seedOf(req.seed, i) } : { ...base }));
}

/** The grammar the request's output follows: a structured output, or a forced tool choice's. */
function grammarOf(req: ParsedRequest): StructuredOutput | null {
  if (req.structured) return req.structured;
  if (req.tools?.grammar) return { spec: req.tools.grammar, param: 'tools' };
  return null;
}

/** Choice i's seed: the client's seed + i, as a uint32. */
const seedOf = (seed: number, i: number) => Number(BigInt.asUintN(32, BigInt(seed) + BigInt(i)));

function newChoice(req: ParsedRequest, deps: CompletionDeps, index: number, prefix: string): Choice {
  return new Choice(
    {
      index,
      stop: req.stop,
      stopTokenIds: new Set([...(req.ignoreEos ? [] : deps.eosTokenIds), ...req.stopTokenIds]),
      clientStopTokenIds: new Set(req.stopTokenIds),
      includeStop: req.includeStopStr,
      skipSpecialTokens: req.skipSpecialTokens,
      prefix,
      tools: req.tools && req.tools.mode !== 'none' ? new ToolCallOutput(req.tools.mode, new Set(req.tools.tools.map((t) => t.function.name)), req.tools.name) : null,
    },
    deps.tokenizer,
  );
}

/** The choice as it appears in a whole (non-streamed) response; `prompt`: its prompt's logprobs, when asked for. */
function choiceBody(meta: Meta, deps: CompletionDeps, ch: Choice, r: JobResult, prompt: PromptLogprobs | null): Record<string, unknown> {
  const req = meta.req;
  let logprobs: unknown = null;
  if (meta.isChat) logprobs = req.logprobs !== null ? chatLogprobs(ch.logprobs, deps.tokenizer) : null;
  else if (req.logprobs !== null) {
    const own = completionLogprobs(ch.logprobs, deps.tokenizer, ch.o.prefix.length);
    logprobs = req.isEchoLogprobs && prompt ? concatCompletionLogprobs(echoCompletionLogprobs(prompt, deps.tokenizer, req.logprobs), own) : own;
  }
  const body: Record<string, unknown> = meta.isChat
    ? { index: ch.index, message: chatMessage(ch), logprobs }
    : { index: ch.index, text: ch.text, logprobs };
  if (!meta.isChat && req.promptLogprobsField !== null) body.prompt_logprobs = prompt ? vllmPromptLogprobs(prompt, deps.tokenizer, req.promptLogprobsField) : null;
  body.finish_reason = ch.finishReason(r);
  body.stop_reason = ch.stopReason();
  if (req.returnTokenIds || !deps.tokenizer) body.token_ids = ch.ids;
  return body;
}

/** A whole response's assistant message: content, or tool calls. */
function chatMessage(ch: Choice): Record<string, unknown> {
  const tools = ch.o.tools;
  if (!tools) return { role: 'assistant', content: ch.text };
  return { role: 'assistant', content: tools.content, ...(tools.calls.length ? { tool_calls: tools.calls } : {}) };
}

async function whole(c: Context, deps: CompletionDeps, meta: Meta, runs: PromptRun[], choices: Choice[]): Promise<Response> {
  const prompts: (PromptLogprobs | null)[] = runs.map(() => null);
  const run = runChoices(
    deps,
    runs,
    choices,
    (ch, tokens, lps) => void ch.push(tokens, lps),
    (p, lps) => (prompts[p] = { ids: runs[p].ids, lps }),
  );
  const signal = c.req.raw.signal;
  signal.addEventListener('abort', run.cancel);
  const results = await run.done.finally(() => signal.removeEventListener('abort', run.cancel));
  const failed = results.find((r) => r.finish === 'error');
  if (failed) throw toApiError(failed.error);
  choices.forEach((ch) => ch.finish());
  const numTokens = results.reduce((a, r) => a + r.numTokens, 0);
  const body = choices.map((ch, i) => choiceBody(meta, deps, ch, results[i], prompts[Math.floor(ch.index / meta.req.n)]));
  const out: Record<string, unknown> = { id: meta.id, object: meta.object, created: meta.created, model: meta.model, choices: body, usage: usage(meta, numTokens) };
  if (meta.isChat && meta.req.promptLogprobsField !== null) out.prompt_logprobs = prompts[0] ? vllmPromptLogprobs(prompts[0], deps.tokenizer, meta.req.promptLogprobsField) : null;
  return c.json(out);
}
