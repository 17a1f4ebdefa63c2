/**
 * Pieces shared by the endpoint schemas, and the one place a schema failure becomes a 400 that
 * names the field (`param`, dotted path, as OpenAI does). Every schema is strict: an argument we
 * do not know is refused (OpenAI: "Unrecognized request argument supplied"), and arguments we
 * know but do not implement are refused by name ({@link refused}), never accepted and ignored.
 *
 * Each field carries its documentation (`.describe`), which docs/API.md is checked against
 * (test/router/api-doc.test.ts).
 */
import { z } from 'zod';
import { badRequest, type ApiError } from '../errors.ts';

/**
 * A field we know of but do not implement: any value other than "absent" (or one `isAllowed`
 * accepts: the value that asks for what we do anyway) is a 400 naming it.
 */
export const refused = (why: string, isAllowed: (v: unknown) => boolean = () => false) =>
  z
    .any()
    .refine((v) => v === undefined || isAllowed(v), { message: `not supported by this server: ${why}` })
    .optional()
    .describe(`refused (400): ${why}`);

const tokenId = z.number().int().min(0);

const grammarText = z.string().min(1).max(1 << 18);
/** A JSON Schema: an object (or its JSON text). */
const jsonSchemaValue = z.union([grammarText, z.record(z.string(), z.unknown())]);
const choiceList = z.array(z.string().min(1).max(4096)).min(1).max(1024);

const responseFormat = z
  .discriminatedUnion('type', [
    z.strictObject({ type: z.literal('text') }),
    z.strictObject({ type: z.literal('json_object') }),
    z.strictObject({
      type: z.literal('json_schema'),
      json_schema: z.strictObject({
        name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'a-z, A-Z, 0-9, _ and -, at most 64'),
        description: z.string().optional(),
        schema: z.record(z.string(), z.unknown()).optional(),
        strict: z.boolean().nullable().optional(),
      }),
    }),
  ])
  .nullable()
  .optional()
  .describe('default text; json_object: any JSON object; json_schema: json_schema.schema (strict or not, the schema is enforced: no property it does not name); compact JSON unless structured_outputs.disable_any_whitespace is false');

const structuredOutputs = z
  .strictObject({
    json: jsonSchemaValue.optional(),
    regex: grammarText.optional(),
    choice: choiceList.optional(),
    grammar: grammarText.optional(),
    json_object: z.boolean().optional(),
    disable_any_whitespace: z.boolean().optional(),
    structural_tag: refused('structural tags are not supported'),
    whitespace_pattern: refused('a whitespace pattern is not supported'),
    disable_additional_properties: refused('schemas always run in strict mode (no property the schema does not name)'),
    disable_fallback: z.boolean().optional(),
  })
  .nullable()
  .optional()
  .describe('vLLM: one of json, regex, choice, grammar, json_object; disable_any_whitespace [true here, false in vLLM] compact JSON; disable_fallback accepted (there is no fallback)');

/** Sampling and output fields of both /v1/completions and /v1/chat/completions. */
export const samplingFields = {
  model: z.string().optional().describe('default: the served model; another name is a 404'),
  max_tokens: z.number().int().min(0).nullable().optional().describe('default: completions 16, chat: what the context leaves; 0 only to score the prompt (echo with logprobs, or prompt_logprobs)'),
  temperature: z.number().min(0).max(2).nullable().optional().describe('default 1; 0 is greedy'),
  top_p: z.number().gt(0).max(1).nullable().optional().describe('default 1'),
  n: z.number().int().min(1).max(16).nullable().optional().describe('default 1; choices share the prompt\'s KV pages (prefix cache)'),
  stream: z.boolean().nullable().optional().describe('default false'),
  stream_options: z
    .strictObject({
      include_usage: z.boolean().optional().describe('a last chunk with usage'),
      continuous_usage_stats: z.boolean().optional().describe('vLLM: usage in every chunk'),
    })
    .nullable()
    .optional()
    .describe('only with stream: true'),
  stop: z.union([z.string().min(1), z.array(z.string().min(1)).max(16)]).nullable().optional().describe('default none; the stop text is left out unless include_stop_str_in_output'),
  seed: z.number().int().min(-(2 ** 63)).max(2 ** 64).nullable().optional().describe('default random; choice i of n uses seed + i'),
  presence_penalty: z.number().min(-2).max(2).nullable().optional().describe('default 0; output tokens'),
  frequency_penalty: z.number().min(-2).max(2).nullable().optional().describe('default 0; output tokens, times their count'),
  logit_bias: z
    .record(z.string().regex(/^\d+$/, 'keys must be token ids'), z.number().min(-100).max(100))
    .nullable()
    .optional()
    .describe('default none; token id -> bias added to its logit'),
  user: z.string().optional().describe('accepted, not used'),
  // vLLM extensions
  top_k: z.number().int().min(-1).nullable().optional().describe('vLLM; default -1 (off; 0 is off too)'),
  min_p: z.number().min(0).max(1).nullable().optional().describe('vLLM; default 0'),
  repetition_penalty: z.number().gt(0).max(10).nullable().optional().describe('vLLM; default 1; prompt and output tokens'),
  min_tokens: z.number().int().min(0).nullable().optional().describe('vLLM; default 0; EOS and stop_token_ids banned until then'),
  stop_token_ids: z.array(tokenId).max(64).nullable().optional().describe('vLLM; default none; the token\'s text is left out unless include_stop_str_in_output'),
  include_stop_str_in_output: z.boolean().nullable().optional().describe('vLLM; default false'),
  ignore_eos: z.boolean().nullable().optional().describe('vLLM; default false'),
  skip_special_tokens: z.boolean().nullable().optional().describe('vLLM; default true'),
  return_token_ids: z.boolean().nullable().optional().describe('vLLM; default false; choices carry token_ids (always when the model has no tokenizer)'),
  // structured outputs (one of these at most; structured-output.ts)
  response_format: responseFormat,
  guided_json: jsonSchemaValue.nullable().optional().describe('vLLM (before 0.12; structured_outputs.json now): the output follows this JSON Schema'),
  guided_regex: grammarText.nullable().optional().describe('vLLM: the output matches this regex (xgrammar syntax)'),
  guided_choice: choiceList.nullable().optional().describe('vLLM: the output is exactly one of these strings'),
  guided_grammar: grammarText.nullable().optional().describe('vLLM: the output follows this grammar (xgrammar EBNF, rule root)'),
  guided_whitespace_pattern: refused('a whitespace pattern is not supported (structured_outputs.disable_any_whitespace: false allows any whitespace)'),
  guided_decoding_backend: refused('the grammar backend is always xgrammar'),
  structured_outputs: structuredOutputs,
  best_of: refused('best_of is not implemented (use n)'),
  use_beam_search: refused('beam search is not implemented'),
  prompt_logprobs: z
    .number()
    .int()
    .min(0)
    .max(20)
    .nullable()
    .optional()
    .describe("vLLM; default none; each prompt token's logprob (the first: null) with this many top alternatives, from the raw logits (no penalties, temperature 1); the whole prompt is computed (no prefix-cache hit)"),
};

/** The schema's verdict: the data, or a 400 naming the first bad field. */
export function parseWith<T extends z.ZodType>(schema: T, body: unknown): z.infer<T> {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw badRequest('the request body must be a JSON object', null, 'invalid_type');
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  throw toBadRequest(r.error);
}

function toBadRequest(err: z.ZodError): ApiError {
  const issue = err.issues[0];
  if (issue.code === 'unrecognized_keys') {
    const at = issue.path.length ? `${pathOf(issue.path)}.` : '';
    const key = `${at}${issue.keys[0]}`;
    return badRequest(`Unrecognized request argument supplied: ${issue.keys.join(', ')}`, key, 'unsupported_parameter');
  }
  const param = pathOf(issue.path);
  const isRefused = issue.code === 'custom' && issue.message.startsWith('not supported');
  return badRequest(`'${param}': ${issue.message}`, param || null, isRefused ? 'unsupported_parameter' : issue.code === 'invalid_type' ? 'invalid_type' : 'invalid_value');
}

function pathOf(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${String(p)}`)).join('');
}
