/**
 * Picks and loads a model's tokenizer: the Llama 3 tokenizer for presets, the checkpoint's
 * `tokenizer.json` for folders that have one, none otherwise. Kept apart from tokenizer.ts (the
 * interface both implementations import) so the implementations and the interface form no cycle.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MicroserveError } from '../../common/errors.ts';
import type { GrammarVocabulary, Tokenizer, TokenizerSource } from './tokenizer.ts';

export type { TokenizerSource };

/** Loads the tokenizer of a model, or null when the model has none (see the module comment). */
export async function loadTokenizer(model: TokenizerSource): Promise<Tokenizer | null> {
  if (model.isPreset) {
    const { Llama3PresetTokenizer } = await import('./llama3.ts');
    return Llama3PresetTokenizer.get();
  }
  if (!model.folder) throw new MicroserveError('BAD_CONFIG', 'loadTokenizer: a non-preset model needs a folder');
  if (!existsSync(join(model.folder, 'tokenizer.json'))) return null;
  const { loadHfTokenizer } = await import('./hf.ts');
  return loadHfTokenizer(model.folder);
}

/** True when `loadTokenizer(model)` finds a tokenizer (a preset, or a folder with tokenizer.json). */
export function hasTokenizer(model: TokenizerSource): boolean {
  return model.isPreset || (!!model.folder && existsSync(join(model.folder, 'tokenizer.json')));
}

/** The model's vocabulary for the grammar engine, or null when it has no tokenizer. */
export function grammarVocabularyOf(model: TokenizerSource): (() => Promise<GrammarVocabulary>) | null {
  if (!hasTokenizer(model)) return null;
  return async () => (await loadTokenizer(model))!.grammarVocabulary();
}
