/**
 * Text in and out of the model: the Tokenizer contract and `loadTokenizer`, which picks the
 * implementation for a model.
 *
 * - preset models (random weights, Llama 3 shape) use the Llama 3 tokenizer that
 *   `llama3-tokenizer-js` ships (actors/text/llama3.ts);
 * - a checkpoint folder with `tokenizer.json` uses it through `@huggingface/tokenizers`, and the
 *   `chat_template` of `tokenizer_config.json` (or `chat_template.jinja`) through
 *   `@huggingface/jinja` (actors/text/hf.ts);
 * - a folder without `tokenizer.json` has no tokenizer: `loadTokenizer` returns null and callers
 *   take token ids only (text input is refused with NO_TOKENIZER).
 */
import { MicroserveError } from '../../common/errors.ts';

/** One chat message. `content` may be OpenAI's array of parts; only `text` parts are used. */
export interface ChatMessage {
  role: string;
  content: string | { type: string; text?: string }[] | null;
  /** Assistant messages: the tool calls it made (`arguments` is JSON text). */
  tool_calls?: ChatToolCall[];
  /** Tool messages: the call this message answers. */
  tool_call_id?: string;
  name?: string;
}

/** A tool call of an assistant message, as OpenAI writes it. */
export interface ChatToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** A tool the model may call, as OpenAI's `tools` entries write it. */
export interface ChatTool {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown> };
}

/**
 * A vocabulary as the grammar engine (xgrammar TokenizerInfo) takes it: `encoded[i]` is token i
 * as tokenizer.json writes it ('' for special tokens, which never appear inside structured text).
 */
export interface GrammarVocabulary {
  encoded: string[];
  /** How `encoded` maps to bytes: GPT-2 byte-level, sentencepiece with <0xNN> byte fallback, or raw text. */
  vocabType: 'byte_level' | 'byte_fallback' | 'raw';
  /** The tokenizer puts a space before the text (sentencepiece's prepend). */
  prependSpace: boolean;
}

export interface EncodeOptions {
  /** [addBos=true] prepend the BOS token (when the tokenizer has one). */
  addBos?: boolean;
}

/** How a conversation ends when rendered (vLLM's chat request fields). */
export interface ChatTemplateOptions {
  /** [addGenerationPrompt=true] end with the assistant's header, where its reply starts. */
  addGenerationPrompt?: boolean;
  /** [continueFinalMessage=false] leave the last (assistant) message open, to be continued. */
  continueFinalMessage?: boolean;
  /** [tools] the tools the model may call, rendered the way the chat format does (needs `supportsTools`). */
  tools?: ChatTool[];
}

export interface DecodeOptions {
  /** [skipSpecialTokens=false] leave special tokens (BOS, EOT, headers...) out of the text. */
  skipSpecialTokens?: boolean;
}

/**
 * Incremental detokenizer for a token stream. `push` returns only text that is complete: a
 * character whose UTF-8 bytes are split across tokens is held back until its last byte arrives.
 * The concatenation of every `push` and the final `flush` equals `decode(allIds)` (with the same
 * `skipSpecialTokens`), except that bytes that never form a valid character come out as U+FFFD.
 */
export interface StreamDecoder {
  push(ids: readonly number[]): string;
  /** Emits what is still held back (incomplete bytes become U+FFFD) and resets. */
  flush(): string;
}

/** Which model a tokenizer is for: a preset name resolves to no folder. */
export interface TokenizerSource {
  /** Checkpoint folder, or null for a preset. */
  folder: string | null;
  isPreset: boolean;
}

export interface Tokenizer {
  /** 'llama3' (the preset tokenizer) or 'hf' (a checkpoint's tokenizer.json). */
  readonly kind: 'llama3' | 'hf';
  /** Where it was loaded from (loadTokenizer(source) loads it again, e.g. in a worker thread). */
  readonly source: TokenizerSource;
  /** Number of token ids (the largest valid id + 1). */
  readonly vocabSize: number;
  /**
   * Ids in [0, baseVocabSize) are ordinary text tokens: the vocabulary without added and special
   * tokens (what Hugging Face calls `tokenizer.vocab_size`; 128000 for Llama 3). Benchmarks draw
   * random prompts from this range so a prompt never holds BOS, EOS or a chat header.
   */
  readonly baseVocabSize: number;
  readonly bosTokenId: number | null;
  /** Ids that end generation (end of text, end of turn). */
  readonly eosTokenIds: number[];
  /** Text → ids (special-token strings in the text become special tokens). BAD_REQUEST for non-string input. */
  encode(text: string, opts?: EncodeOptions): number[];
  /** Ids → text. Throws BAD_TOKEN for an id outside the vocabulary. */
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  /**
   * Renders a conversation with the model's chat format and tokenizes it, ending with the
   * assistant's header (the generation prompt). Throws BAD_REQUEST when the model has no chat
   * template or the template refuses the messages.
   */
  applyChatTemplate(messages: readonly ChatMessage[], opts?: ChatTemplateOptions): number[];
  /** [opts.skipSpecialTokens=true] a fresh incremental detokenizer. */
  createStreamDecoder(opts?: DecodeOptions): StreamDecoder;
  /** The chat format renders `tools`, tool calls and tool messages (Llama 3.x JSON tool calling, or a template that uses `tools`). */
  readonly supportsTools: boolean;
  /** The vocabulary for the grammar engine (structured outputs). */
  grammarVocabulary(): GrammarVocabulary;
}

/** The text of a message: a string as is, text parts concatenated. */
export function messageText(m: ChatMessage): string {
  if (typeof m.content === 'string') return m.content;
  if (m.content == null) return '';
  return m.content.map((p) => (p.type === 'text' && typeof p.text === 'string' ? p.text : '')).join('');
}

/** Tool-call arguments (JSON text) as chat templates read them: parsed; text that is not JSON stays text. */
export function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Throws BAD_TOKEN unless every id is an integer in [0, vocabSize). */
export function checkTokenIds(ids: readonly number[], vocabSize: number): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new MicroserveError('BAD_TOKEN', `token id ${id} at index ${i} is outside the vocabulary [0, ${vocabSize})`, { index: i });
    }
  }
}
