/**
 * Where a topology's (or `generate`'s) `model` string points, in this order:
 *   1. a preset (`tiny`, `llama-3.1-8b`): seeded random weights, real shapes — text is gibberish;
 *   2. a checkpoint folder path (with config.json), resolved against `baseDir`;
 *   3. a model shipped with microserve: a bare name with a Hugging Face folder under the package's
 *      `models/` (e.g. `kjv-chat`, trained weights), found wherever `npx microserve` runs from;
 *   4. otherwise the path of 2 (loading it then fails naming the missing folder).
 * Every consumer (engine loading, the router's tokenizer, `up`'s banner, `generate`) resolves
 * through here, so a name means the same folder everywhere.
 */
import { existsSync, readdirSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PRESETS, isPreset } from './presets.ts';

/** The package's folder of shipped models (each a Hugging Face checkpoint folder). */
export const SHIPPED_MODELS_DIR = fileURLToPath(new URL('../models/', import.meta.url));

export interface ModelSource {
  /** Served model name: the preset name or the folder's base name. */
  name: string;
  /** Checkpoint folder (absolute), or null for a preset. */
  folder: string | null;
  isPreset: boolean;
  /** True when the weights are random (presets): what they write is not language. */
  isRandom: boolean;
  /** One line for banners: what the weights are. */
  weights: string;
}

/** Names of the models shipped in SHIPPED_MODELS_DIR (folders with a config.json). */
export function shippedModels(): string[] {
  if (!existsSync(SHIPPED_MODELS_DIR)) return [];
  return readdirSync(SHIPPED_MODELS_DIR, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(SHIPPED_MODELS_DIR, d.name, 'config.json')))
    .map((d) => d.name)
    .sort();
}

/** A bare name (no path separator, not `.`-relative) of a folder in SHIPPED_MODELS_DIR with a config.json. */
export function shippedModelFolder(model: string): string | null {
  if (model === '' || /[\\/]/.test(model) || model.startsWith('.')) return null;
  const folder = join(SHIPPED_MODELS_DIR, model);
  return existsSync(join(folder, 'config.json')) ? folder : null;
}

/** Resolves `model` (see the module comment) [baseDir: the current directory]; never touches the weights. */
export function resolveModelSource(model: string, baseDir = process.cwd()): ModelSource {
  if (isPreset(model)) {
    return { name: model, folder: null, isPreset: true, isRandom: true, weights: `random weights (preset: ${PRESETS[model].description}); its text is not language` };
  }
  const folder = resolve(baseDir, model);
  // a topology names a shipped model by its absolute folder once loaded: still the shipped model
  const isShippedFolder = resolve(folder, '..') === resolve(SHIPPED_MODELS_DIR) && existsSync(join(folder, 'config.json'));
  const shipped = isShippedFolder ? folder : existsSync(join(folder, 'config.json')) ? null : shippedModelFolder(model);
  if (shipped) return { name: basename(shipped), folder: shipped, isPreset: false, isRandom: false, weights: `trained weights shipped with microserve (${shipped})` };
  return { name: basename(folder), folder, isPreset: false, isRandom: false, weights: `checkpoint ${folder}` };
}
