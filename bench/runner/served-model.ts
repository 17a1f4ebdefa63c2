/**
 * What the bench learns from the server before it builds a trace: the model id to request and its
 * vocabulary, from `GET /v1/models` (microserve adds `vocab_size` and `base_vocab_size` to the
 * model card; other OpenAI servers do not). Random prompt ids are drawn from the served model's
 * ordinary tokens, so the default fits any model (Llama 3: 128000; kjv-chat: 4091), and a
 * `--token-id-max` past the vocabulary is refused before a request would be (HTTP 400 per
 * request otherwise).
 */
import { MicroserveError } from '../../common/errors.ts';

/** Without a vocabulary from the server: the Llama 3 vocabulary without its special tokens. */
export const FALLBACK_TOKEN_ID_MAX = 128000;

export interface ServedModel {
  /** The model id requests name. */
  id: string;
  /** Prompt ids must be below it; null when the server does not say. */
  vocabSize: number | null;
  /** Ids below it are ordinary text tokens (no BOS/EOS/headers); null when the server does not say. */
  baseVocabSize: number | null;
}

const positiveInt = (v: unknown): number | null => (Number.isInteger(v) && (v as number) > 0 ? (v as number) : null);

/**
 * Reads `GET /v1/models` [model: the first entry's id; when given, its entry (or the first) still
 * supplies the vocabulary].
 */
export async function fetchServedModel(baseUrl: string, apiKey?: string, model?: string): Promise<ServedModel> {
  let body: { data?: { id?: unknown; vocab_size?: unknown; base_vocab_size?: unknown }[] };
  try {
    const res = await fetch(`${baseUrl}/v1/models`, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {}, signal: AbortSignal.timeout(10_000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`);
    body = (await res.json()) as typeof body;
  } catch (e) {
    if (model) return { id: model, vocabSize: null, baseVocabSize: null };
    throw new MicroserveError('BAD_CONFIG', `${baseUrl}/v1/models: ${(e as Error).message}; pass --model`, { field: 'model' });
  }
  const list = Array.isArray(body.data) ? body.data : [];
  const card = (model ? list.find((d) => d?.id === model) : undefined) ?? list[0];
  const id = model ?? (typeof card?.id === 'string' ? card.id : undefined);
  if (!id) throw new MicroserveError('BAD_CONFIG', `${baseUrl}/v1/models lists no model: pass --model`, { field: 'model' });
  const vocabSize = positiveInt(card?.vocab_size);
  const base = positiveInt(card?.base_vocab_size);
  return { id, vocabSize, baseVocabSize: base !== null && vocabSize !== null ? Math.min(base, vocabSize) : base };
}

/**
 * The range random prompt ids are drawn from, [0, result): `given` (`--token-id-max`) when set,
 * else the served model's ordinary tokens, else its vocabulary, else FALLBACK_TOKEN_ID_MAX.
 * Throws BAD_CONFIG (field `token-id-max`) for a given value past the served vocabulary.
 */
export function resolveTokenIdMax(given: number | undefined, m: ServedModel): number {
  if (given !== undefined) {
    if (m.vocabSize !== null && given > m.vocabSize) {
      throw new MicroserveError(
        'BAD_CONFIG',
        `--token-id-max ${given} is beyond the vocabulary of the served model '${m.id}' (${m.vocabSize} token ids): give at most ${m.vocabSize}, or leave it out to draw from its ${m.baseVocabSize ?? m.vocabSize} ordinary tokens`,
        { field: 'token-id-max' },
      );
    }
    return given;
  }
  return m.baseVocabSize ?? m.vocabSize ?? FALLBACK_TOKEN_ID_MAX;
}

/**
 * Text → ids by the server's own tokenizer (`POST /tokenize`, vLLM's endpoint), or null when the
 * server has none (no such endpoint, or a model without a tokenizer): the caller then tokenizes
 * with the Llama 3 tokenizer.
 */
export async function serverEncoder(baseUrl: string, m: ServedModel, apiKey?: string): Promise<((text: string, addBos: boolean) => Promise<number[]>) | null> {
  const encode = async (text: string, addBos: boolean): Promise<number[]> => {
    const res = await fetch(`${baseUrl}/tokenize`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
      body: JSON.stringify({ model: m.id, prompt: text, add_special_tokens: addBos }),
      signal: AbortSignal.timeout(60_000),
    });
    const body = (await res.json().catch(() => null)) as { tokens?: unknown; error?: { message?: string; code?: string } } | null;
    if (!res.ok || !Array.isArray(body?.tokens)) {
      throw new MicroserveError('BAD_CONFIG', `${baseUrl}/tokenize: HTTP ${res.status} ${body?.error?.message ?? ''}`.trim(), { field: 'dataset-path', status: res.status, code: body?.error?.code });
    }
    return body!.tokens as number[];
  };
  try {
    await encode('probe', false);
    return encode;
  } catch {
    return null;
  }
}

/** Throws BAD_CONFIG when a prompt holds an id the served model does not have (e.g. Llama 3 ids for a small vocabulary). */
export function checkTraceVocab(prompts: readonly { promptIds: readonly number[] }[], m: ServedModel, what: string): void {
  if (m.vocabSize === null) return;
  for (const p of prompts) {
    for (const id of p.promptIds) {
      if (id >= m.vocabSize) {
        throw new MicroserveError('BAD_CONFIG', `${what}: token id ${id} is beyond the vocabulary of the served model '${m.id}' (${m.vocabSize} token ids)`, { field: 'dataset-name' });
      }
    }
  }
}
