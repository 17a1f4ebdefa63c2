/**
 * `/v1/completions` and `/v1/chat/completions` bodies → ParsedRequest: the endpoint's schema
 * (schema/endpoints.ts) checks every field, then the rules between fields; every refusal is a 400
 * naming the field (`param`).
 */
import type { ChatMessage } from '../../text/tokenizer.ts';
import { badRequest } from './errors.ts';
import { parseWith } from './schema/common.ts';
import { chatSchema, completionSchema, type ChatBody, type CompletionBody } from './schema/endpoints.ts';
import { structuredOutput, type StructuredOutput } from './structured-output.ts';
import { toolPlan, type ToolPlan } from './tool-plan.ts';

export interface ParsedRequest {
  kind: 'completion' | 'chat';
  /** null: the served model. */
  model: string | null;
  /** Completions: one entry per prompt (text or token ids). */
  prompts: (string | number[])[];
  /** Chat: the conversation. */
  messages?: ChatMessage[];
  addGenerationPrompt: boolean;
  continueFinalMessage: boolean;
  /** null: the endpoint's default. */
  maxTokens: number | null;
  /** The name of the max-tokens field the client used (for errors). */
  maxTokensParam: string;
  /** Choices per prompt. */
  n: number;
  temperature: number;
  topP: number;
  seed?: number;
  topK: number;
  minP: number;
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  logitBias: [number, number][];
  minTokens: number;
  /** Stop strings: generation ends at the first occurrence (left out unless includeStopStr). */
  stop: string[];
  /** Extra token ids that end generation (their text is left out unless includeStopStr). */
  stopTokenIds: number[];
  includeStopStr: boolean;
  ignoreEos: boolean;
  skipSpecialTokens: boolean;
  stream: boolean;
  includeUsage: boolean;
  continuousUsage: boolean;
  returnTokenIds: boolean;
  /** Completions: the prompt's text before the completion. */
  echo: boolean;
  /** null: no logprobs; else the number of top alternatives per token. */
  logprobs: number | null;
  /** Completions: echo with logprobs (the prompt tokens' logprobs come first). */
  isEchoLogprobs: boolean;
  /** vLLM's prompt_logprobs (its top count): the choices (chat: the response) carry `prompt_logprobs`. */
  promptLogprobsField: number | null;
  /** What the engine computes: top alternatives per prompt token (null: no prompt logprobs). */
  promptLogprobs: number | null;
  /** The structured output asked for (response_format, structured_outputs, guided_*), or null. */
  structured: StructuredOutput | null;
  /** Chat with tools: how the output is read and constrained, or null. */
  tools: ToolPlan | null;
}

const orDefault = <T>(v: T | null | undefined, d: T): T => (v === null || v === undefined ? d : v);

/** Schema-checked messages as the tokenizer takes them (developer is system; tool calls and ids kept). */
export function toMessages(messages: ChatBody['messages']): ChatMessage[] {
  return messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: m.content ?? null,
    ...(m.tool_calls ? { tool_calls: m.tool_calls } : {}),
    ...(m.tool_call_id !== undefined ? { tool_call_id: m.tool_call_id } : {}),
    ...(m.name !== undefined ? { name: m.name } : {}),
  }));
}

/** Validates a body for `kind` against the schema and the cross-field rules. */
export function parseRequest(raw: unknown, kind: 'completion' | 'chat'): ParsedRequest {
  const b: CompletionBody | ChatBody = kind === 'chat' ? parseWith(chatSchema, raw) : parseWith(completionSchema, raw);
  const chat = kind === 'chat' ? (b as ChatBody) : null;
  const cmpl = kind === 'completion' ? (b as CompletionBody) : null;
  const stream = orDefault(b.stream, false);
  if (b.stream_options && !stream) throw badRequest("'stream_options' is only allowed with stream: true", 'stream_options', 'invalid_value');
  const maxTokensParam = chat?.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens';
  const maxTokens = chat?.max_completion_tokens ?? b.max_tokens ?? null;
  const minTokens = orDefault(b.min_tokens, 0);
  if (maxTokens !== null && minTokens > maxTokens) throw badRequest(`'min_tokens' (${minTokens}) must not exceed ${maxTokensParam} (${maxTokens})`, 'min_tokens', 'invalid_value');
  let logprobs: number | null = null;
  if (chat) {
    if (chat.top_logprobs != null && chat.top_logprobs > 0 && chat.logprobs !== true) throw badRequest("'top_logprobs' needs logprobs: true", 'top_logprobs', 'invalid_value');
    if (chat.logprobs === true) logprobs = orDefault(chat.top_logprobs, 0);
  } else if (cmpl?.logprobs != null) {
    logprobs = cmpl.logprobs;
  }
  const echo = orDefault(cmpl?.echo, false);
  const isEchoLogprobs = echo && logprobs !== null;
  const promptLogprobsField = b.prompt_logprobs ?? null;
  const promptLogprobs = isEchoLogprobs || promptLogprobsField !== null ? Math.max(isEchoLogprobs ? logprobs! : 0, promptLogprobsField ?? 0) : null;
  if (maxTokens === 0 && promptLogprobs === null) {
    throw badRequest(`'${maxTokensParam}' 0 only scores the prompt: it needs echo with logprobs, or prompt_logprobs`, maxTokensParam, 'invalid_value');
  }
  const continueFinalMessage = orDefault(chat?.continue_final_message, false);
  const addGenerationPrompt = orDefault(chat?.add_generation_prompt, !continueFinalMessage);
  if (continueFinalMessage && addGenerationPrompt) throw badRequest("'continue_final_message' and 'add_generation_prompt' cannot both be true", 'continue_final_message', 'invalid_value');
  if (chat && continueFinalMessage && chat.messages[chat.messages.length - 1].role !== 'assistant') {
    throw badRequest("'continue_final_message' needs an assistant message last", 'messages', 'invalid_value');
  }
  const topK = orDefault(b.top_k, -1);
  const structured = structuredOutput(b);
  return {
    kind,
    model: b.model ?? null,
    prompts: cmpl ? promptList(cmpl.prompt) : [],
    messages: chat ? toMessages(chat.messages) : undefined,
    addGenerationPrompt,
    continueFinalMessage,
    maxTokens,
    maxTokensParam,
    n: orDefault(b.n, 1),
    temperature: orDefault(b.temperature, 1),
    topP: orDefault(b.top_p, 1),
    ...(b.seed != null ? { seed: b.seed } : {}),
    topK: topK < 0 ? 0 : topK,
    minP: orDefault(b.min_p, 0),
    repetitionPenalty: orDefault(b.repetition_penalty, 1),
    presencePenalty: orDefault(b.presence_penalty, 0),
    frequencyPenalty: orDefault(b.frequency_penalty, 0),
    logitBias: Object.entries(b.logit_bias ?? {}).map(([k, v]) => [Number(k), v]),
    minTokens,
    stop: b.stop == null ? [] : typeof b.stop === 'string' ? [b.stop] : b.stop,
    stopTokenIds: b.stop_token_ids ?? [],
    includeStopStr: orDefault(b.include_stop_str_in_output, false),
    ignoreEos: orDefault(b.ignore_eos, false),
    skipSpecialTokens: orDefault(b.skip_special_tokens, true),
    stream,
    includeUsage: b.stream_options?.include_usage === true,
    continuousUsage: b.stream_options?.continuous_usage_stats === true,
    returnTokenIds: orDefault(b.return_token_ids, false),
    echo,
    logprobs,
    isEchoLogprobs,
    promptLogprobsField,
    promptLogprobs,
    structured,
    tools: chat ? toolPlan(chat, structured !== null) : null,
  };
}

function promptList(p: CompletionBody['prompt']): (string | number[])[] {
  if (typeof p === 'string') return [p];
  if (typeof p[0] === 'number') return [p as number[]];
  return p as (string | number[])[];
}
