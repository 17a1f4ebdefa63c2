/**
 * Logprobs in OpenAI's two shapes, from the engine's per-token `TokenLogprob` (the log-softmax of
 * the processed logits at the request's temperature: see native/src/common/logit-processing.h).
 * - chat: `{ content: [{ token, logprob, bytes, top_logprobs: [{ token, logprob, bytes }] }] }`;
 * - completions (legacy): `{ tokens, token_logprobs, top_logprobs: [{ token: logprob }], text_offset }`;
 *   with echo, the prompt's tokens come first (the first one's logprob and top_logprobs null);
 * - vLLM's prompt_logprobs: `[null, { "<id>": { logprob, rank, decoded_token } }, ...]`, one
 *   entry per prompt token: the token itself and the top alternatives (rank: 1-based place among
 *   the alternatives; null for a prompt token outside them — vLLM counts its exact rank).
 * Prompt logprobs are the log-softmax of the raw logits (no penalties, temperature 1).
 */
import type { TokenLogprob } from '../../messages.ts';
import type { Tokenizer } from '../../text/tokenizer.ts';

/** One token's logprob with the token id, as a choice collects them. */
export interface TokenEntry {
  id: number;
  lp: TokenLogprob;
}

const tokenText = (tok: Tokenizer | null, id: number) => (tok ? tok.decode([id]) : `token_id:${id}`);
const bytesOf = (s: string) => [...Buffer.from(s, 'utf8')];

export function chatLogprobs(entries: TokenEntry[], tok: Tokenizer | null) {
  return {
    content: entries.map(({ id, lp }) => {
      const t = tokenText(tok, id);
      return {
        token: t,
        logprob: lp.logprob,
        bytes: bytesOf(t),
        top_logprobs: lp.top.map(([tid, l]) => {
          const tt = tokenText(tok, tid);
          return { token: tt, logprob: l, bytes: bytesOf(tt) };
        }),
      };
    }),
  };
}

/** `textOffset`: where the first entry's text starts in the choice's text. */
export function completionLogprobs(entries: TokenEntry[], tok: Tokenizer | null, textOffset: number) {
  const tokens: string[] = [];
  const offsets: number[] = [];
  let at = textOffset;
  for (const { id } of entries) {
    const t = tokenText(tok, id);
    tokens.push(t);
    offsets.push(at);
    at += t.length;
  }
  return {
    tokens,
    token_logprobs: entries.map(({ lp }) => lp.logprob),
    top_logprobs: entries.map(({ lp }) => Object.fromEntries(lp.top.map(([tid, l]) => [tokenText(tok, tid), l]))),
    text_offset: offsets,
  };
}

/** A prompt's ids and the logprobs of its tokens 1.. (the engine's promptLogprobs). */
export interface PromptLogprobs {
  ids: readonly number[];
  lps: readonly TokenLogprob[];
}

/** Echo's part of the legacy object: the prompt tokens from text offset 0, `numTop` alternatives each. */
export function echoCompletionLogprobs(p: PromptLogprobs, tok: Tokenizer | null, numTop: number) {
  const tokens = p.ids.map((id) => tokenText(tok, id));
  const offsets: number[] = [];
  let at = 0;
  for (const t of tokens) offsets.push(at), (at += t.length);
  return {
    tokens,
    token_logprobs: [null, ...p.lps.map((lp) => lp.logprob)],
    top_logprobs: [null, ...p.lps.map((lp) => Object.fromEntries(lp.top.slice(0, numTop).map(([tid, l]) => [tokenText(tok, tid), l])))],
    text_offset: offsets,
  };
}

/** The legacy object of `a` then `b` (echo: the prompt's, then the completion's). */
export function concatCompletionLogprobs(a: ReturnType<typeof echoCompletionLogprobs>, b: ReturnType<typeof completionLogprobs>) {
  return {
    tokens: [...a.tokens, ...b.tokens],
    token_logprobs: [...a.token_logprobs, ...b.token_logprobs],
    top_logprobs: [...a.top_logprobs, ...b.top_logprobs],
    text_offset: [...a.text_offset, ...b.text_offset],
  };
}

/** vLLM's prompt_logprobs list, `numTop` alternatives per token. */
export function vllmPromptLogprobs(p: PromptLogprobs, tok: Tokenizer | null, numTop: number) {
  return [
    null,
    ...p.lps.map((lp, i) => {
      const id = p.ids[i + 1];
      const place = lp.top.findIndex(([tid]) => tid === id);
      const out: Record<string, { logprob: number; rank: number | null; decoded_token: string }> = {
        [id]: { logprob: lp.logprob, rank: place >= 0 ? place + 1 : null, decoded_token: tokenText(tok, id) },
      };
      lp.top.slice(0, numTop).forEach(([tid, l], k) => (out[tid] ??= { logprob: l, rank: k + 1, decoded_token: tokenText(tok, tid) }));
      return out;
    }),
  ];
}
