/**
 * Loads a strategy module: a built-in name resolves to `actors/router/strategies/<name>.ts`, any
 * other value is a module path (relative to `baseDir`). Both go through the same dynamic
 * `import()`; loading touches no engine. A user module is re-read on every load after the first,
 * so editing it and re-applying the plan takes the new code: the module cache (tsx's too) is
 * keyed by path, so the edited file is imported through a short-lived sibling copy (same folder:
 * its relative imports still resolve).
 */
import { copyFileSync, existsSync, rmSync } from 'node:fs';
import { basename, dirname, extname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MicroserveError } from '../errors.ts';
import type { Strategy, StrategyModule } from './strategy-api.ts';

export const BUILTIN_STRATEGIES = ['dp', 'dp-prefix', 'pd', 'balanced-pd', 'migrate'] as const;

export interface LoadedStrategy {
  /** As given: a built-in name or the module path. */
  name: string;
  /** The file URL that was imported. */
  url: string;
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

/** Resolves `spec` to a module URL; throws BAD_CONFIG for a missing file. */
export function strategyUrl(spec: string, baseDir: string = process.cwd()): { url: string; isBuiltin: boolean } {
  if ((BUILTIN_STRATEGIES as readonly string[]).includes(spec)) {
    return { url: new URL(`./strategies/${spec}.ts`, import.meta.url).href, isBuiltin: true };
  }
  if (!/[/\\.]/.test(spec)) {
    throw new MicroserveError('BAD_CONFIG', `unknown strategy '${spec}': use one of ${BUILTIN_STRATEGIES.join(', ')} or a module path`, { field: 'strategy' });
  }
  const path = isAbsolute(spec) ? spec : resolve(baseDir, spec);
  if (!existsSync(path)) throw new MicroserveError('BAD_CONFIG', `strategy module ${path} does not exist`, { field: 'strategy' });
  return { url: pathToFileURL(path).href, isBuiltin: false };
}

export async function loadStrategy(spec: string, params: Record<string, unknown> = {}, baseDir?: string): Promise<LoadedStrategy> {
  if (typeof spec !== 'string' || spec.length === 0) throw new MicroserveError('BAD_CONFIG', 'strategy must be a non-empty string', { field: 'strategy' });
  if (params === null || typeof params !== 'object' || Array.isArray(params)) {
    throw new MicroserveError('BAD_CONFIG', 'strategy params must be an object', { field: 'params' });
  }
  const { url, isBuiltin } = strategyUrl(spec, baseDir);
  let mod: StrategyModule;
  try {
    mod = isBuiltin ? await import(url) : await importFresh(url);
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

/**
 * Imports every built-in module once, so the first switch to one (hot reload) costs a cached
 * import rather than a compile: reconfiguration time stays in milliseconds.
 */
export async function preloadBuiltinStrategies(): Promise<void> {
  await Promise.all(BUILTIN_STRATEGIES.map((s) => import(strategyUrl(s).url)));
}
