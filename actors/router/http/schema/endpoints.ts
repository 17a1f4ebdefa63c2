/**
 * One strict schema per endpoint: `POST /v1/completions`, `POST /v1/chat/completions`,
 * `POST /tokenize`, `POST /detokenize`. docs/API.md lists the same fields (checked by a test).
 */
import { z } from 'zod';
import { refused, samplingFields } from './common.ts';

const tokenIds = z.array(z.number().int().min(0));

export const completionSchema = z.strictObject({
  ...samplingFields,
  // token ids before lists of strings: a union tries its options in order, and a 3000-id prompt
  // checked against string[] first built 3000 issues before the ids matched (0.9 ms vs 0.24 ms a
  // body; a burst of 1000 such requests held the router's event loop for seconds)
  prompt: z
    .union([z.string(), tokenIds.min(1), z.array(z.string()).min(1), z.array(tokenIds.min(1)).min(1)])
    .describe('required: text, token ids, or a list of either (one choice set per prompt)'),
  echo: z.boolean().nullable().optional().describe("default false; the prompt text before the completion (with logprobs: the prompt tokens' logprobs first, the first null)"),
  logprobs: z.number().int().min(0).max(20).nullable().optional().describe('default none; top alternatives per token (OpenAI allows 5, vLLM 20)'),
  suffix: refused('suffix (insertion) is not implemented'),
});

const textPart = z.strictObject({ type: z.literal('text'), text: z.string() });

const toolCall = z.strictObject({
  id: z.string().max(256),
  type: z.literal('function'),
  function: z.strictObject({ name: z.string().max(256), arguments: z.string().max(1 << 20) }),
});

const message = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z.union([z.string(), z.array(textPart), z.null()]).optional().describe('text or text parts'),
  name: z.string().optional(),
  tool_calls: z.array(toolCall).max(128).optional().describe('assistant messages: the calls it made'),
  tool_call_id: z.string().max(256).optional().describe('tool messages: the call answered'),
});

const functionName = z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'a-z, A-Z, 0-9, _ and -, at most 64');
const tool = z.strictObject({
  type: z.literal('function'),
  function: z.strictObject({
    name: functionName,
    description: z.string().max(1 << 16).optional(),
    parameters: z.record(z.string(), z.unknown()).optional(),
    strict: z.boolean().nullable().optional(),
  }),
});

export const chatSchema = z.strictObject({
  ...samplingFields,
  messages: z.array(message).min(1).describe('required'),
  max_completion_tokens: z.number().int().min(1).nullable().optional().describe('default: what the context leaves; wins over max_tokens'),
  logprobs: z.boolean().nullable().optional().describe('default false'),
  top_logprobs: z.number().int().min(0).max(20).nullable().optional().describe('default 0; needs logprobs: true'),
  add_generation_prompt: z.boolean().nullable().optional().describe('vLLM; default true: end with the assistant header'),
  continue_final_message: z.boolean().nullable().optional().describe('vLLM; default false: continue the last (assistant) message; not with add_generation_prompt'),
  tools: z.array(tool).max(128).nullable().optional().describe('functions the model may call (Llama 3.x JSON tool calling; a chat template without tools: 400)'),
  tool_choice: z
    .union([z.enum(['none', 'auto', 'required']), z.strictObject({ type: z.literal('function'), function: z.strictObject({ name: functionName }) })])
    .nullable()
    .optional()
    .describe('default auto with tools, none without; required and a named function constrain the output (JSON schema of the tools)'),
  parallel_tool_calls: z.boolean().nullable().optional().describe('default true; false: at most one call'),
  functions: refused('function calling is not implemented'),
  function_call: refused('function calling is not implemented'),
  echo: refused('echo is a /v1/completions parameter here'),
  chat_template: refused('a request chat template is not supported'),
  chat_template_kwargs: refused('chat template arguments are not supported'),
});

export const tokenizeSchema = z
  .strictObject({
    model: z.string().optional().describe('default: the served model'),
    prompt: z.string().optional().describe('text to tokenize (this or messages)'),
    messages: z.array(message).min(1).optional().describe('a conversation, rendered by the chat template (this or prompt)'),
    add_special_tokens: z.boolean().optional().describe('default true: BOS first (prompt only)'),
    add_generation_prompt: z.boolean().optional().describe('default true (messages only)'),
    continue_final_message: z.boolean().optional().describe('default false (messages only)'),
  })
  .refine((b) => (b.prompt === undefined) !== (b.messages === undefined), { message: 'give exactly one of prompt and messages', path: ['prompt'] });

export const detokenizeSchema = z.strictObject({
  model: z.string().optional().describe('default: the served model'),
  tokens: tokenIds.describe('required: token ids'),
});

export type CompletionBody = z.infer<typeof completionSchema>;
export type ChatBody = z.infer<typeof chatSchema>;
export type TokenizeBody = z.infer<typeof tokenizeSchema>;

/** Endpoint path → schema (docs/API.md has a section per entry). */
export const ENDPOINT_SCHEMAS = {
  'POST /v1/completions': completionSchema,
  'POST /v1/chat/completions': chatSchema,
  'POST /tokenize': tokenizeSchema,
  'POST /detokenize': detokenizeSchema,
} as const;
