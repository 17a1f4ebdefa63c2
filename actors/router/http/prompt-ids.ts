/**
 * Prompts → token ids for the router's endpoints: token ids are checked against the vocabulary;
 * text and conversations are tokenized inline when short and in the tokenizer pool (worker
 * threads) when long, so a huge prompt never stalls the event loop. A prompt that does not fit
 * the context is a 400 (context_length_exceeded) naming the field.
 */
import { isMicroserveError } from '../../../common/errors.ts';
import { log } from '../../../common/log.ts';
import type { TokenizePool } from '../../text/tokenize-pool.ts';
import { shouldOffload } from '../../text/tokenize-pool.ts';
import { checkTokenIds, messageText, type ChatMessage, type ChatTemplateOptions, type Tokenizer } from '../../text/tokenizer.ts';
import { badRequest, toApiError } from './errors.ts';

export interface PromptDeps {
  tokenizer: Tokenizer | null;
  /** null: always tokenize inline. */
  tokenizePool: TokenizePool | null;
  vocabSize: number | null;
  contextLength: number;
}

/** A 400 naming `param` for a bad prompt (tokenizer errors keep their message). */
function asBadRequest(e: unknown, param: string) {
  if (isMicroserveError(e) && (e.code === 'BAD_REQUEST' || e.code === 'BAD_TOKEN')) return badRequest(e.message, param, e.code.toLowerCase());
  return toApiError(e);
}

export async function encodeText(deps: PromptDeps, text: string, addBos: boolean, param: string): Promise<number[]> {
  const tok = needTokenizer(deps, param);
  try {
    if (deps.tokenizePool && shouldOffload(text.length)) {
      const ids = await inPool(() => deps.tokenizePool!.encode(text, addBos));
      if (ids) return ids;
    }
    return tok.encode(text, { addBos });
  } catch (e) {
    throw asBadRequest(e, param);
  }
}

export async function encodeChat(deps: PromptDeps, messages: ChatMessage[], opts: ChatTemplateOptions): Promise<number[]> {
  const tok = needTokenizer(deps, 'messages');
  let numChars = 0;
  for (const m of messages) numChars += messageText(m).length;
  try {
    if (deps.tokenizePool && shouldOffload(numChars)) {
      const ids = await inPool(() => deps.tokenizePool!.applyChatTemplate(messages, opts));
      if (ids) return ids;
    }
    return tok.applyChatTemplate(messages, opts);
  } catch (e) {
    throw asBadRequest(e, 'messages');
  }
}

/** The pool's answer; null when the pool itself failed (a dead worker): the caller tokenizes inline. */
async function inPool(call: () => Promise<Int32Array>): Promise<number[] | null> {
  try {
    return Array.from(await call());
  } catch (e) {
    if (isMicroserveError(e, 'NATIVE_ERROR')) {
      log.warn('tokenizer pool failed; tokenizing inline', { err: e });
      return null;
    }
    throw e;
  }
}

export function checkIds(deps: PromptDeps, ids: number[], param: string): number[] {
  if (deps.vocabSize !== null) {
    try {
      checkTokenIds(ids, deps.vocabSize);
    } catch (e) {
      throw badRequest((e as Error).message, param, 'bad_token');
    }
  }
  return ids;
}

/** 400 unless the prompt leaves room for at least one token in the context. */
export function checkContext(deps: PromptDeps, numIds: number, param: string): void {
  if (numIds >= deps.contextLength) {
    throw badRequest(`This model's maximum context length is ${deps.contextLength} tokens; the prompt has ${numIds}.`, param, 'context_length_exceeded');
  }
}

function needTokenizer(deps: PromptDeps, param: string): Tokenizer {
  if (!deps.tokenizer) throw badRequest(`this model has no tokenizer: give the prompt as token ids (${param})`, param, 'no_tokenizer');
  return deps.tokenizer;
}
