/**
 * Validation of `/v1/completions` and `/v1/chat/completions` bodies. Every refusal is a 400
 * naming the field (`param`). Unknown fields are ignored, as OpenAI does; known features this
 * server does not implement (n > 1, logprobs, echo, penalties...) are refused, not ignored.
 */
import type { ChatMessage } from '../../text/tokenizer.ts';
import { badRequest } from './errors.ts';

export interface ParsedRequest {
  kind: 'completion' | 'chat';
  /** null: the served model. */
  model: string | null;
  /** Completions: text or token ids. */
  prompt?: string | number[];
  /** Chat: the conversation. */
  messages?: ChatMessage[];
  /** null: the endpoint's default. */
  maxTokens: number | null;
  temperature: number;
  topP: number;
  seed?: number;
  /** Stop strings: generation ends before the first occurrence (not included). */
  stop: string[];
  /** Extension: extra token ids that end generation (included in the count, not the text). */
  stopTokenIds: number[];
  /** Extension: do not stop at the model's EOS tokens. */
  ignoreEos: boolean;
  stream: boolean;
  includeUsage: boolean;
  /** Extension: responses carry the generated token ids (`token_ids`). */
  returnTokenIds: boolean;
}

type Body = Record<string, unknown>;

const isSet = (v: unknown) => v !== undefined && v !== null;

function num(b: Body, key: string, o: { min: number; max: number; isInt?: boolean; isMinOpen?: boolean }): number | undefined {
  const v = b[key];
  if (!isSet(v)) return undefined;
  const isOk = typeof v === 'number' && Number.isFinite(v) && (o.isMinOpen ? v > o.min : v >= o.min) && v <= o.max && (!o.isInt || Number.isInteger(v));
  if (!isOk) {
    const range = `${o.isMinOpen ? '(' : '['}${o.min}, ${o.max}]`;
    throw badRequest(`'${key}' must be ${o.isInt ? 'an integer' : 'a number'} in ${range} (got ${JSON.stringify(v)})`, key, 'invalid_value');
  }
  return v as number;
}

function bool(b: Body, key: string): boolean {
  const v = b[key];
  if (!isSet(v)) return false;
  if (typeof v !== 'boolean') throw badRequest(`'${key}' must be a boolean`, key, 'invalid_type');
  return v;
}

function tokenIds(v: unknown, param: string): number[] {
  if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x) && x >= 0)) throw badRequest(`'${param}' must be an array of token ids (integers >= 0)`, param, 'invalid_type');
  return v as number[];
}

function refuse(b: Body, key: string, isUsed: (v: unknown) => boolean, what: string): void {
  if (isSet(b[key]) && isUsed(b[key])) throw badRequest(`${what} is not supported by this server`, key, 'unsupported_parameter');
}

function parseStop(v: unknown): string[] {
  if (!isSet(v)) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length > 16 || !list.every((s) => typeof s === 'string' && s.length > 0)) {
    throw badRequest("'stop' must be a non-empty string or an array of at most 16 non-empty strings", 'stop', 'invalid_type');
  }
  return list as string[];
}

function parsePrompt(v: unknown): string | number[] {
  if (!isSet(v)) throw badRequest("'prompt' is required", 'prompt', 'missing_required_parameter');
  let p = v;
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || Array.isArray(p[0]))) p = p[0];
  if (typeof p === 'string') return p;
  if (Array.isArray(p) && p.length > 0 && (typeof p[0] === 'string' || Array.isArray(p[0]))) {
    throw badRequest('only one prompt per request is supported', 'prompt', 'unsupported_parameter');
  }
  const ids = tokenIds(p, 'prompt');
  if (ids.length === 0) throw badRequest("'prompt' must not be empty", 'prompt', 'invalid_value');
  return ids;
}

const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool']);

function parseMessages(v: unknown): ChatMessage[] {
  if (!isSet(v)) throw badRequest("'messages' is required", 'messages', 'missing_required_parameter');
  if (!Array.isArray(v) || v.length === 0) throw badRequest("'messages' must be a non-empty array", 'messages', 'invalid_type');
  return v.map((m, i) => {
    const param = `messages[${i}]`;
    if (!m || typeof m !== 'object') throw badRequest(`'${param}' must be an object`, param, 'invalid_type');
    const { role, content } = m as Body;
    if (typeof role !== 'string' || !ROLES.has(role)) throw badRequest(`'${param}.role' must be one of ${[...ROLES].join(', ')}`, `${param}.role`, 'invalid_value');
    const isParts = Array.isArray(content) && content.every((p) => p && typeof p === 'object' && typeof (p as Body).type === 'string');
    if (!(typeof content === 'string' || content === null || isParts)) {
      throw badRequest(`'${param}.content' must be a string or an array of content parts`, `${param}.content`, 'invalid_type');
    }
    if (isParts && (content as Body[]).some((p) => p.type !== 'text' || typeof p.text !== 'string')) {
      throw badRequest(`'${param}.content': only text parts are supported`, `${param}.content`, 'unsupported_parameter');
    }
    return { role: role === 'developer' ? 'system' : role, content: content as ChatMessage['content'] };
  });
}

export function parseRequest(body: unknown, kind: 'completion' | 'chat'): ParsedRequest {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw badRequest('the request body must be a JSON object', null, 'invalid_type');
  const b = body as Body;
  if (isSet(b.model) && typeof b.model !== 'string') throw badRequest("'model' must be a string", 'model', 'invalid_type');
  num(b, 'n', { min: 1, max: 1, isInt: true });
  num(b, 'best_of', { min: 1, max: 1, isInt: true });
  refuse(b, 'logprobs', (x) => x !== false && x !== 0, 'logprobs');
  refuse(b, 'top_logprobs', (x) => x !== 0, 'top_logprobs');
  refuse(b, 'echo', (x) => x === true, 'echo');
  refuse(b, 'suffix', (x) => x !== '', 'suffix');
  refuse(b, 'presence_penalty', (x) => x !== 0, 'presence_penalty');
  refuse(b, 'frequency_penalty', (x) => x !== 0, 'frequency_penalty');
  refuse(b, 'tools', (x) => Array.isArray(x) && x.length > 0, 'tools');
  const maxTokens = num(b, 'max_completion_tokens', { min: 1, max: 2 ** 31, isInt: true }) ?? num(b, 'max_tokens', { min: 1, max: 2 ** 31, isInt: true }) ?? null;
  const stream = bool(b, 'stream');
  const so = b.stream_options;
  if (isSet(so) && (typeof so !== 'object' || Array.isArray(so))) throw badRequest("'stream_options' must be an object", 'stream_options', 'invalid_type');
  const includeUsage = isSet(so) && (so as Body).include_usage === true;
  return {
    kind,
    model: (b.model as string | undefined) ?? null,
    prompt: kind === 'completion' ? parsePrompt(b.prompt) : undefined,
    messages: kind === 'chat' ? parseMessages(b.messages) : undefined,
    maxTokens,
    temperature: num(b, 'temperature', { min: 0, max: 2 }) ?? 1,
    topP: num(b, 'top_p', { min: 0, max: 1, isMinOpen: true }) ?? 1,
    seed: num(b, 'seed', { min: -(2 ** 53), max: 2 ** 53, isInt: true }),
    stop: parseStop(b.stop),
    stopTokenIds: isSet(b.stop_token_ids) ? tokenIds(b.stop_token_ids, 'stop_token_ids') : [],
    ignoreEos: bool(b, 'ignore_eos'),
    stream,
    includeUsage,
    returnTokenIds: bool(b, 'return_token_ids'),
  };
}
