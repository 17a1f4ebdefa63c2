/**
 * Logprobs in OpenAI's two shapes, from the engine's per-token `TokenLogprob` (the log-softmax of
 * the processed logits at the request's temperature: see native/src/common/logit-processing.h).
 * - chat: `{ content: [{ token, logprob, bytes, top_logprobs: [{ token, logprob, bytes }] }] }`;
 * - completions (legacy): `{ tokens, token_logprobs, top_logprobs: [{ token: logprob }], text_offset }`.
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
