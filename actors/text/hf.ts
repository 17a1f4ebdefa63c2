/**
 * A checkpoint folder's own tokenizer: `tokenizer.json` through `@huggingface/tokenizers`, the
 * chat template (`tokenizer_config.json`'s `chat_template`, or `chat_template.jinja`) through
 * `@huggingface/jinja`. BOS/EOS come from `tokenizer_config.json`, `generation_config.json`
 * and `config.json` (EOS ids are the union of what they name).
 */
import { Template } from '@huggingface/jinja';
import { Tokenizer as HfCore } from '@huggingface/tokenizers';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MicroserveError } from '../../common/errors.ts';
import { WindowStreamDecoder } from './stream-decoder.ts';
import { checkTokenIds, messageText, parseArguments, type ChatMessage, type ChatTemplateOptions, type DecodeOptions, type EncodeOptions, type GrammarVocabulary, type StreamDecoder, type Tokenizer, type TokenizerSource } from './tokenizer.ts';

type Json = Record<string, any>;

function readJson(folder: string, name: string, isRequired: boolean): Json | null {
  const p = join(folder, name);
  if (!existsSync(p)) {
    if (isRequired) throw new MicroserveError('BAD_CHECKPOINT', `${p} is missing`);
    return null;
  }
  try {
    return JSON.parse(readFileSync(p, 'utf8'));
  } catch (e) {
    throw new MicroserveError('BAD_CHECKPOINT', `${p} is not valid JSON: ${(e as Error).message}`, { file: p });
  }
}

/** A token given as `"<s>"` or `{ content: "<s>" }`. */
const tokenString = (t: unknown): string | null =>
  typeof t === 'string' ? t : t && typeof (t as any).content === 'string' ? (t as any).content : null;

const idList = (v: unknown): number[] => (Array.isArray(v) ? v.filter((x) => Number.isInteger(x)) : Number.isInteger(v) ? [v as number] : []);

function pickTemplate(folder: string, config: Json): string | null {
  const t = config.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t.find((x: any) => x?.name === 'default') ?? t[0];
    if (typeof named?.template === 'string') return named.template;
  }
  const file = join(folder, 'chat_template.jinja');
  return existsSync(file) ? readFileSync(file, 'utf8') : null;
}

export class HfTokenizer implements Tokenizer {
  readonly kind = 'hf' as const;
  readonly vocabSize: number;
  readonly baseVocabSize: number;
  readonly bosTokenId: number | null;
  readonly eosTokenIds: number[];
  private readonly core: HfCore;
  private readonly template: Template | null;
  private readonly templateVars: Record<string, unknown>;
  readonly supportsTools: boolean;

  readonly source: TokenizerSource;

  constructor(folder: string) {
    this.source = { folder, isPreset: false };
    const json = readJson(folder, 'tokenizer.json', true)!;
    const config = readJson(folder, 'tokenizer_config.json', false) ?? {};
    const modelConfig = readJson(folder, 'config.json', false) ?? {};
    const genConfig = readJson(folder, 'generation_config.json', false) ?? {};
    try {
      this.core = new HfCore(json, config);
    } catch (e) {
      throw new MicroserveError('BAD_CHECKPOINT', `${join(folder, 'tokenizer.json')}: ${(e as Error).message}`);
    }
    let maxId = -1;
    for (const id of this.core.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = Math.max(maxId + 1, Number.isInteger(modelConfig.vocab_size) ? modelConfig.vocab_size : 0);
    let maxBaseId = -1;
    for (const id of this.core.get_vocab(false).values()) maxBaseId = Math.max(maxBaseId, id);
    this.baseVocabSize = maxBaseId + 1;
    const bos = tokenString(config.bos_token);
    this.bosTokenId = (bos !== null ? this.core.token_to_id(bos) : undefined) ?? idList(modelConfig.bos_token_id)[0] ?? null;
    const eos = tokenString(config.eos_token);
    const eosIds = new Set([...idList(genConfig.eos_token_id), ...idList(modelConfig.eos_token_id)]);
    const eosId = eos !== null ? this.core.token_to_id(eos) : undefined;
    if (eosId !== undefined) eosIds.add(eosId);
    this.eosTokenIds = [...eosIds];
    const src = pickTemplate(folder, config);
    try {
      this.template = src === null ? null : new Template(src);
    } catch (e) {
      throw new MicroserveError('BAD_CHECKPOINT', `chat template of ${folder} does not parse: ${(e as Error).message}`);
    }
    // a template that reads `tools` renders them (Llama 3.x, Qwen, Mistral...); kjv-chat's does not
    this.supportsTools = src !== null && /\btools\b/.test(src);
    this.templateVars = { bos_token: bos ?? '', eos_token: eos ?? '', pad_token: tokenString(config.pad_token) ?? '', unk_token: tokenString(config.unk_token) ?? '' };
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new MicroserveError('BAD_REQUEST', 'encode: text must be a string');
    const ids = this.core.encode(text, { add_special_tokens: false }).ids;
    return (opts.addBos ?? true) && this.bosTokenId !== null ? [this.bosTokenId, ...ids] : ids;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    checkTokenIds(ids, this.vocabSize);
    if (ids.length === 0) return '';
    return this.core.decode(ids as number[], { skip_special_tokens: opts.skipSpecialTokens ?? false, clean_up_tokenization_spaces: false });
  }

  applyChatTemplate(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): number[] {
    if (!this.template) throw new MicroserveError('BAD_REQUEST', 'this model has no chat template: use /v1/completions');
    if (messages.length === 0) throw new MicroserveError('BAD_REQUEST', 'messages must not be empty');
    let text: string;
    try {
      text = this.template.render({
        ...this.templateVars,
        messages: messages.map(templateMessage),
        ...(opts.tools ? { tools: opts.tools } : {}),
        add_generation_prompt: !opts.continueFinalMessage && (opts.addGenerationPrompt ?? true),
      });
    } catch (e) {
      throw new MicroserveError('BAD_REQUEST', `the chat template refused the messages: ${(e as Error).message}`);
    }
    if (opts.continueFinalMessage) {
      // as transformers does: cut the rendering right after the final message's content
      const last = messageText(messages[messages.length - 1]).trim();
      const at = text.lastIndexOf(last);
      if (last && at >= 0) text = text.slice(0, at + last.length);
    }
    // the rendered text carries BOS itself when the template writes it (as transformers does)
    return this.encode(text, { addBos: false });
  }

  createStreamDecoder(opts: DecodeOptions = {}): StreamDecoder {
    const skip = opts.skipSpecialTokens ?? true;
    return new WindowStreamDecoder((ids) => this.decode(ids, { skipSpecialTokens: skip }));
  }

  grammarVocabulary(): GrammarVocabulary {
    const json = readJson(this.source.folder!, 'tokenizer.json', true)!;
    const encoded: string[] = new Array(this.vocabSize).fill('');
    for (const [token, id] of this.core.get_vocab(true)) if (id < encoded.length) encoded[id] = token;
    for (const t of (json.added_tokens ?? []) as { id: number; special?: boolean }[]) if (t.special && t.id < encoded.length) encoded[t.id] = '';
    const kinds = JSON.stringify([json.decoder, json.pre_tokenizer, json.normalizer]);
    const vocabType = kinds.includes('"ByteLevel"') ? 'byte_level' : kinds.includes('"ByteFallback"') ? 'byte_fallback' : 'raw';
    // sentencepiece-style tokenizers prepend "▁" (Metaspace prepend_scheme, or a Prepend normalizer)
    const prependSpace = /"prepend_scheme":"(first|always)"|"type":"Prepend"/.test(kinds);
    return { encoded, vocabType, prependSpace };
  }
}

/**
 * A message as chat templates read it: text content; an assistant's tool calls with their
 * arguments parsed (templates write them with `tojson`, as vLLM passes them), a tool message's id.
 */
function templateMessage(m: ChatMessage): Record<string, unknown> {
  const out: Record<string, unknown> = { role: m.role, content: messageText(m) };
  if (m.tool_calls) {
    out.tool_calls = m.tool_calls.map((c) => ({ id: c.id, type: c.type, function: { name: c.function.name, arguments: parseArguments(c.function.arguments) } }));
  }
  if (m.tool_call_id !== undefined) out.tool_call_id = m.tool_call_id;
  if (m.name !== undefined) out.name = m.name;
  return out;
}

export function loadHfTokenizer(folder: string): HfTokenizer {
  return new HfTokenizer(folder);
}
