/**
 * Loads a strategy module: a built-in name is served from the registry in `strategies/index.ts`,
 * any other value is a module path (relative to `baseDir`) loaded by dynamic `import()`; loading
 * touches no engine. A user module is re-read on every load after the first,
 * so editing it and re-applying the plan takes the new code: the module cache (tsx's too) is
 * keyed by path, so the edited file is imported through a short-lived sibling copy (same folder:
 * its relative imports still resolve).
 */
import { copyFileSync, existsSync, rmSync } from 'node:fs';
import { basename, dirname, extname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MicroserveError } from '../../common/errors.ts';
import { BUILTINS, BUILTIN_STRATEGIES, isBuiltinStrategy, type BuiltinStrategy } from './strategies/index.ts';
import type { Strategy, StrategyModule } from './strategy-api.ts';

export interface LoadedStrategy {
  /** As given: a built-in name or the module path. */
  name: string;
  /** The file URL that was imported; null for a built-in. */
  url: string | null;
  run: Strategy;
  params: Record<string, unknown>;
}

let reloads = 0;
const loadedPaths = new Set<string>();

/** Imports a user module; a path imported before is imported again from a fresh sibling copy. */
async function importFresh(url: string): Promise<StrategyModule> {
  const path = fileURLToPath(url);
  if (!loadedPaths.has(path)) {
    loadedPaths.add(path);
    return import(url);
  }
  const ext = extname(path);
  const copy = join(dirname(path), `.${basename(path, ext)}.reload-${process.pid}-${++reloads}${ext}`);
  try {
    copyFileSync(path, copy);
  } catch {
    return import(url); // read-only folder: the cached module it is
  }
  try {
    return await import(pathToFileURL(copy).href);
  } finally {
    rmSync(copy, { force: true });
  }
}

/** Where a strategy comes from: a built-in's name, or a user module's absolute path. */
export type StrategySource = { builtin: BuiltinStrategy } | { path: string };

/**
 * Resolves `spec` (a built-in name, or a module path: anything with `/`, `\\` or `.`, relative to
 * `baseDir`); throws BAD_CONFIG naming `strategy` for an unknown name or a missing file. The
 * topology validator resolves through this too.
 */
export function resolveStrategy(spec: string, baseDir: string = process.cwd()): StrategySource {
  if (isBuiltinStrategy(spec)) return { builtin: spec };
  if (!/[/\\.]/.test(spec)) {
    throw new MicroserveError('BAD_CONFIG', `unknown strategy '${spec}' (expected ${BUILTIN_STRATEGIES.join(', ')}, or a module path)`, { field: 'strategy' });
  }
  const path = isAbsolute(spec) ? spec : resolve(baseDir, spec);
  if (!existsSync(path)) throw new MicroserveError('BAD_CONFIG', `strategy module ${path} does not exist`, { field: 'strategy' });
  return { path };
}

/** A built-in's params check (BAD_CONFIG naming the field), or nothing for a user module. */
export function builtinParamsCheck(source: StrategySource): StrategyModule['validateParams'] {
  return 'builtin' in source ? BUILTINS[source.builtin].validateParams : undefined;
}

export async function loadStrategy(spec: string, params: Record<string, unknown> = {}, baseDir?: string): Promise<LoadedStrategy> {
  if (typeof spec !== 'string' || spec.length === 0) throw new MicroserveError('BAD_CONFIG', 'strategy must be a non-empty string', { field: 'strategy' });
  if (params === null || typeof params !== 'object' || Array.isArray(params)) {
    throw new MicroserveError('BAD_CONFIG', 'strategy params must be an object', { field: 'params' });
  }
  const source = resolveStrategy(spec, baseDir);
  const url = 'path' in source ? pathToFileURL(source.path).href : null;
  let mod: StrategyModule;
  try {
    mod = 'builtin' in source ? BUILTINS[source.builtin] : await importFresh(pathToFileURL(source.path).href);
  } catch (e) {
    throw new MicroserveError('BAD_CONFIG', `strategy module '${spec}' failed to load: ${(e as Error).message}`, { field: 'strategy' });
  }
  if (typeof mod.default !== 'function') {
    throw new MicroserveError('BAD_CONFIG', `strategy module '${spec}' must default-export an async function (ctx, req)`, { field: 'strategy' });
  }
  if (mod.validateParams) {
    try {
      mod.validateParams(params);
    } catch (e) {
      if (e instanceof MicroserveError) throw e;
      throw new MicroserveError('BAD_CONFIG', `strategy '${spec}' refused its params: ${(e as Error).message}`, { field: 'params' });
    }
  }
  return { name: spec, url, run: mod.default, params: { ...params } };
}
