/**
 * vLLM's tokenizer endpoints: `POST /tokenize` (text or a conversation → ids, with `count` and
 * `max_model_len`) and `POST /detokenize` (ids → text). Long texts go to the tokenizer pool, as
 * completions' prompts do.
 */
import type { Context } from 'hono';
import { ApiError, badRequest } from './errors.ts';
import { toMessages } from './parse.ts';
import { parseWith } from './schema/common.ts';
import { detokenizeSchema, tokenizeSchema } from './schema/endpoints.ts';
import { checkIds, encodeChat, encodeText, type PromptDeps } from './prompt-ids.ts';

export interface TokenizeDeps extends PromptDeps {
  modelName: string;
}

async function jsonBody(c: Context): Promise<unknown> {
  try {
    return JSON.parse(await c.req.text());
  } catch {
    throw badRequest('We could not parse the JSON body of your request: it is not valid JSON.', null, 'invalid_json');
  }
}

function checkModel(deps: TokenizeDeps, model: string | undefined): void {
  if (model !== undefined && model !== deps.modelName) {
    throw new ApiError(404, `The model '${model}' does not exist (this server serves '${deps.modelName}')`, 'invalid_request_error', 'model', 'model_not_found');
  }
}

export async function handleTokenize(c: Context, deps: TokenizeDeps): Promise<Response> {
  const b = parseWith(tokenizeSchema, await jsonBody(c));
  checkModel(deps, b.model);
  if (b.messages && b.add_special_tokens !== undefined) throw badRequest("'add_special_tokens' applies to prompt, not messages", 'add_special_tokens', 'invalid_value');
  if (b.prompt !== undefined && (b.add_generation_prompt !== undefined || b.continue_final_message !== undefined)) {
    throw badRequest("'add_generation_prompt' and 'continue_final_message' apply to messages, not prompt", b.add_generation_prompt !== undefined ? 'add_generation_prompt' : 'continue_final_message', 'invalid_value');
  }
  let tokens: number[];
  if (b.messages) {
    const isContinue = b.continue_final_message ?? false;
    const addGen = b.add_generation_prompt ?? !isContinue;
    if (isContinue && addGen) throw badRequest("'continue_final_message' and 'add_generation_prompt' cannot both be true", 'continue_final_message', 'invalid_value');
    const messages = toMessages(b.messages);
    tokens = await encodeChat(deps, messages, { addGenerationPrompt: addGen, continueFinalMessage: isContinue });
  } else {
    tokens = await encodeText(deps, b.prompt!, b.add_special_tokens ?? true, 'prompt');
  }
  return c.json({ count: tokens.length, max_model_len: deps.contextLength, tokens });
}

export async function handleDetokenize(c: Context, deps: TokenizeDeps): Promise<Response> {
  const b = parseWith(detokenizeSchema, await jsonBody(c));
  checkModel(deps, b.model);
  if (!deps.tokenizer) throw badRequest('this model has no tokenizer', 'tokens', 'no_tokenizer');
  const ids = checkIds(deps, b.tokens, 'tokens');
  return c.json({ prompt: deps.tokenizer.decode(ids) });
}
