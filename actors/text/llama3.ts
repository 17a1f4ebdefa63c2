/**
 * The Llama 3 tokenizer for preset models, over `llama3-tokenizer-js` (which bakes in the
 * 128,000-token BPE vocabulary and the 256 special tokens).
 *
 * Chat format (Llama 3 instruct):
 *   <|begin_of_text|>(<|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>)*
 *   <|start_header_id|>assistant<|end_header_id|>\n\n
 * with CONTENT trimmed, as the official template does.
 */
import llama3 from 'llama3-tokenizer-js';
import { MicroserveError } from '../../common/errors.ts';
import { ByteStreamDecoder } from './stream-decoder.ts';
import { llama3ToolTurns } from './llama3-tools.ts';
import { checkTokenIds, messageText, type ChatMessage, type ChatTemplateOptions, type DecodeOptions, type EncodeOptions, type GrammarVocabulary, type StreamDecoder, type Tokenizer } from './tokenizer.ts';

/** Special token ids of the Llama 3 vocabulary. */
export const LLAMA3_TOKENS = {
  beginOfText: 128000,
  endOfText: 128001,
  startHeader: 128006,
  endHeader: 128007,
  endOfMessage: 128008,
  endOfTurn: 128009,
} as const;

const NUM_REGULAR = 128000;
const VOCAB_SIZE = 128256;

/**
 * GPT-2's byte-level alphabet: printable bytes stand for themselves, the other 68 bytes are
 * shifted to code points 256..323 in byte order. Returns code point → byte.
 */
function unicodeToByte(): Map<number, number> {
  const map = new Map<number, number>();
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    const isPrintable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    map.set(isPrintable ? b : 256 + shifted++, b);
  }
  return map;
}

export class Llama3PresetTokenizer implements Tokenizer {
  readonly kind = 'llama3' as const;
  readonly source = { folder: null, isPreset: true };
  readonly vocabSize = VOCAB_SIZE;
  readonly baseVocabSize = NUM_REGULAR;
  readonly bosTokenId = LLAMA3_TOKENS.beginOfText;
  readonly eosTokenIds = [LLAMA3_TOKENS.endOfText, LLAMA3_TOKENS.endOfMessage, LLAMA3_TOKENS.endOfTurn];
  /** Llama 3.1 JSON tool calling (llama3-tools.ts). */
  readonly supportsTools = true;
  private static instance: Llama3PresetTokenizer | null = null;
  private readonly byteOf = unicodeToByte();
  /** Lazily filled: the UTF-8 bytes of regular token `id`. */
  private readonly bytesCache: (Uint8Array | undefined)[] = new Array(NUM_REGULAR);
  private readonly headerCache = new Map<string, number[]>();

  /** The tokenizer is stateless; one instance serves the process. */
  static get(): Llama3PresetTokenizer {
    return (this.instance ??= new Llama3PresetTokenizer());
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new MicroserveError('BAD_REQUEST', 'encode: text must be a string');
    const ids = llama3.encode(text, { bos: false, eos: false });
    return (opts.addBos ?? true) ? [this.bosTokenId, ...ids] : ids;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    checkTokenIds(ids, VOCAB_SIZE);
    const d = new ByteStreamDecoder((id) => this.piece(id, opts.skipSpecialTokens ?? false));
    return d.push(ids) + d.flush();
  }

  applyChatTemplate(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): number[] {
    if (messages.length === 0) throw new MicroserveError('BAD_REQUEST', 'messages must not be empty');
    if (opts.tools?.length || messages.some((m) => m.role === 'tool' || m.tool_calls?.length)) messages = llama3ToolTurns(messages, opts.tools);
    const isOpenEnd = opts.continueFinalMessage ?? false;
    const ids: number[] = [this.bosTokenId];
    // appended one by one: a spread of a huge prompt's ids would overflow the stack
    const append = (xs: readonly number[]) => {
      for (const x of xs) ids.push(x);
    };
    messages.forEach((m, i) => {
      append(this.header(m.role));
      // "\n\n" after the header is tokenized together with the content, as the template's string would be
      append(llama3.encode('\n\n' + messageText(m).trim(), { bos: false, eos: false }));
      if (!(isOpenEnd && i === messages.length - 1)) ids.push(LLAMA3_TOKENS.endOfTurn);
    });
    if (!isOpenEnd && (opts.addGenerationPrompt ?? true)) {
      append(this.header('assistant'));
      append(llama3.encode('\n\n', { bos: false, eos: false }));
    }
    return ids;
  }

  createStreamDecoder(opts: DecodeOptions = {}): StreamDecoder {
    const skip = opts.skipSpecialTokens ?? true;
    return new ByteStreamDecoder((id) => {
      checkTokenIds([id], VOCAB_SIZE);
      return this.piece(id, skip);
    });
  }

  grammarVocabulary(): GrammarVocabulary {
    // regular tokens are GPT-2 byte-level strings; special ones never appear inside structured text
    const encoded = Array.from({ length: VOCAB_SIZE }, (_, id) => (id < NUM_REGULAR ? llama3.vocabById[id] : ''));
    return { encoded, vocabType: 'byte_level', prependSpace: false };
  }

  /** Bytes of a regular token; the text (or null when skipped) of a special one. */
  private piece(id: number, skipSpecial: boolean): Uint8Array | string | null {
    if (id >= NUM_REGULAR) return skipSpecial ? null : llama3.vocabById[id];
    let b = this.bytesCache[id];
    if (!b) {
      const s = llama3.vocabById[id];
      b = new Uint8Array(s.length);
      let n = 0;
      for (const ch of s) b[n++] = this.byteOf.get(ch.codePointAt(0)!) ?? 0x3f;
      b = b.subarray(0, n);
      this.bytesCache[id] = b;
    }
    return b;
  }

  private header(role: string): number[] {
    let h = this.headerCache.get(role);
    if (!h) {
      h = [LLAMA3_TOKENS.startHeader, ...llama3.encode(role, { bos: false, eos: false }), LLAMA3_TOKENS.endHeader];
      if (this.headerCache.size < 64) this.headerCache.set(role, h);
    }
    return h;
  }
}
