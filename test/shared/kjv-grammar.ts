// Structured-output helpers shared by the engine and CUDA grammar tests on the shipped kjv-chat
// model: its tokenizer, chat prompts, greedy sampling with a grammar, decoded text without EOS,
// and a nested zod schema to validate against (and its grammar spec).
import { z } from 'zod';
import type { GrammarSpec, SamplingParams } from '../../actors/messages.ts';
import { loadTokenizer } from '../../actors/text/loader.ts';
import { shippedModelFolder } from '../../native/model-source.ts';

export const folder = shippedModelFolder('kjv-chat')!;
export const tok = (await loadTokenizer({ folder, isPreset: false }))!;

/** Chat prompt ids of one user turn. */
export const prompt = (q: string) => tok.applyChatTemplate([{ role: 'user', content: q }]);

/** Helpers bound to the model's EOS ids (read when called: the model opens in test.before). */
export function withEos(eos: () => number[]) {
  return {
    withGrammar: (grammar: GrammarSpec, maxTokens = 120, extra: Partial<SamplingParams> = {}): SamplingParams => ({ maxTokens, temperature: 0, topP: 1, stopTokenIds: eos(), grammar, ...extra }),
    text: (ids: number[]) => tok.decode(ids.filter((t) => !eos().includes(t)), { skipSpecialTokens: true }),
  };
}

export const Person = z.object({
  name: z.string().max(20),
  mood: z.enum(['joyful', 'sorrowful', 'wrathful']),
  place: z.object({ city: z.string().max(16), year: z.number().int() }),
  sons: z.array(z.string().max(12)).max(3),
});

/** `Person` as a json-schema grammar spec (what `response_format: json_schema` becomes). */
export const personSpec: GrammarSpec = { type: 'json', schema: JSON.stringify(z.toJSONSchema(Person)) };
