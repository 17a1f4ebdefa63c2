/**
 * The grammar engine for structured outputs: `@mlc-ai/web-xgrammar` (the MLC team's xgrammar,
 * compiled to WASM), loaded in Node as independent instances.
 *
 * Why a loader and not `import`: the package's `lib/index.js` is a CommonJS/UMD bundle that uses
 * `require` and `__filename`, but its package.json says `"type": "module"`, so Node loads it as
 * ESM and the import fails ("require is not defined in ES module scope"). It is compiled here as
 * the CommonJS module it is (`Module.prototype._compile`).
 *
 * Why instances: a schema, regex or grammar that xgrammar refuses makes it abort (an emscripten
 * `abort()`: a RuntimeError "Aborted()", or a raw C++ exception thrown as a number) after printing
 * the reason through the module's `printErr`. The WASM stack is not unwound, so an instance that
 * aborted is not reused (measured: a few hundred aborts in one instance hang it). Each instance
 * routes its printErr to its own `lastError` (one line of the bundle is patched for that: the
 * version is pinned in package.json), so the reason reaches the client.
 */
import { readFileSync } from 'node:fs';
import { createRequire, Module } from 'node:module';
import { dirname, join } from 'node:path';
import type * as XG from '@mlc-ai/web-xgrammar';
import { MicroserveError } from '../../common/errors.ts';

export type XGrammarLib = typeof XG;
export type { CompiledGrammar, Grammar, GrammarCompiler, GrammarMatcher, TokenizerInfo } from '@mlc-ai/web-xgrammar';

/** One independent copy of xgrammar (its own WASM memory). */
export interface XGrammarInstance {
  readonly lib: XGrammarLib;
  /** False once a call aborted: the instance must not be used again. */
  readonly isUsable: boolean;
  /**
   * Runs `f` on this instance; a failure marks the instance unusable and becomes BAD_GRAMMAR with
   * xgrammar's reason, naming `field`.
   */
  call<T>(field: string, f: (lib: XGrammarLib) => T | Promise<T>): Promise<T>;
}

const PRINT_ERR = 'var err=Module["printErr"]||console.error.bind(console);';

let source: { file: string; text: string } | null = null;

function bundle(): { file: string; text: string } {
  if (source) return source;
  const req = createRequire(import.meta.url);
  const file = join(dirname(req.resolve('@mlc-ai/web-xgrammar/package.json')), 'lib', 'index.js');
  const text = readFileSync(file, 'utf8');
  if (text.split(PRINT_ERR).length !== 2) throw new MicroserveError('BAD_CONFIG', `${file}: not the @mlc-ai/web-xgrammar build this loader knows (pinned in package.json)`);
  source = { file, text: text.replace(PRINT_ERR, 'var err=Module["printErr"]||module.msPrintErr;') };
  return source;
}

/** A fresh xgrammar instance (its WASM is instantiated on first use, ~50 ms). */
export function loadXGrammar(): XGrammarInstance {
  const { file, text } = bundle();
  let lastError = '';
  // Node's CommonJS loader, as `require` would run a .cjs file; `msPrintErr` is read by the patched line
  const m = new Module(file) as Module & { _compile(src: string, file: string): void; msPrintErr: (...a: unknown[]) => void };
  m.filename = file;
  m.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(dirname(file));
  m.msPrintErr = (...a: unknown[]) => {
    const line = a.map(String).join(' ');
    if (!line.startsWith('Aborted(')) lastError = line;
  };
  m._compile(text, file);
  const lib = m.exports as XGrammarLib;
  let isUsable = true;
  return {
    lib,
    get isUsable() {
      return isUsable;
    },
    async call<T>(field: string, f: (lib: XGrammarLib) => T | Promise<T>): Promise<T> {
      if (!isUsable) throw new MicroserveError('BAD_GRAMMAR', `${field}: the grammar engine instance is no longer usable`, { field });
      lastError = '';
      try {
        return await f(lib);
      } catch (e) {
        isUsable = false;
        throw new MicroserveError('BAD_GRAMMAR', `${field}: ${reasonOf(lastError, e)}`, { field, param: field });
      }
    },
  };
}

/** xgrammar's printed reason without its source location, else the thrown error's message. */
function reasonOf(printed: string, e: unknown): string {
  const m = /^\[FATAL\] [^:]+:\d+: (?:Check failed: \(.*?\) is false: )?(.*)$/s.exec(printed.trim());
  if (m) return m[1].trim().slice(0, 500);
  if (e instanceof Error && !e.message.startsWith('Aborted(')) return e.message.slice(0, 500);
  return 'the grammar engine refused it';
}
