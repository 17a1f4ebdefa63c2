/**
 * An engine's grammar compiler: specs (actors/messages.ts GrammarSpec) → xgrammar compiled
 * grammars for this model's vocabulary, cached (LRU by spec text; compiling a JSON schema against
 * a 128k vocabulary takes ~0.1-0.2 s, a cache hit nothing).
 *
 * Every spec is first checked in a throw-away instance (actors/text/grammar-spec.ts
 * GrammarChecker), so the instance that serves requests only sees grammars xgrammar accepts. If
 * a compile fails there all the same, that instance is replaced for later requests (matchers
 * already made on it keep running on it).
 */
import { log } from '../../../common/log.ts';
import { buildGrammar, GrammarChecker, grammarKey } from '../../text/grammar-spec.ts';
import type { GrammarVocabulary } from '../../text/tokenizer.ts';
import { loadXGrammar, type CompiledGrammar, type GrammarCompiler, type XGrammarInstance } from '../../text/xgrammar.ts';
import type { GrammarSpec } from '../../messages.ts';

export interface GrammarCompilerOptions {
  /** The model's vocabulary, asked for once, on the first grammar (indexing 128k tokens takes ~0.3 s). */
  vocabulary: () => Promise<GrammarVocabulary>;
  /** Logits per row (the mask has ceil(vocabSize / 32) words; ids past the vocabulary are never allowed). */
  vocabSize: number;
  /** Tokens that end generation: the grammar allows them where the output is complete. */
  stopTokenIds: number[];
  /** [cacheSize=64] compiled grammars kept, least recently used dropped first. */
  cacheSize?: number;
}

/** A compiled grammar and the xgrammar instance it lives in (its matchers must be made there). */
export interface CompiledEntry {
  compiled: CompiledGrammar;
  inst: XGrammarInstance;
}

interface Backend {
  inst: XGrammarInstance;
  compiler: GrammarCompiler;
}

export class GrammarCompilerCache {
  private readonly checker = new GrammarChecker();
  private readonly cache = new Map<string, Promise<CompiledEntry>>();
  private backend: Promise<Backend> | null = null;
  private vocab: Promise<GrammarVocabulary> | null = null;
  private readonly cacheSize: number;

  constructor(private readonly o: GrammarCompilerOptions) {
    this.cacheSize = o.cacheSize ?? 64;
  }

  /** Compiled grammars in the cache (status, tests). */
  get size(): number {
    return this.cache.size;
  }

  /** The compiled grammar of `spec`: BAD_GRAMMAR naming `field` when xgrammar refuses it. */
  compile(spec: GrammarSpec, field: string): Promise<CompiledEntry> {
    const key = grammarKey(spec);
    let hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key); // re-inserted: most recently used last
    } else {
      hit = this.compileNew(spec, field);
      hit.catch(() => this.cache.get(key) === hit && this.cache.delete(key));
    }
    this.cache.set(key, hit);
    while (this.cache.size > this.cacheSize) {
      const [oldest, entry] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      // matchers made from it keep their own reference to the compiled grammar
      entry.then((e) => e.compiled.dispose(), () => {});
    }
    return hit;
  }

  private async compileNew(spec: GrammarSpec, field: string): Promise<CompiledEntry> {
    await this.checker.check(spec, field);
    const b = await this.ready();
    try {
      const compiled = await b.inst.call(field, async (lib) => {
        const g = await buildGrammar(lib, spec);
        try {
          return await b.compiler.compileGrammar(g);
        } finally {
          g.dispose();
        }
      });
      return { compiled, inst: b.inst };
    } catch (e) {
      if (!b.inst.isUsable && this.backend) {
        log.warn('grammar compile failed after its check: a fresh grammar engine instance serves the next ones', { err: e as Error });
        this.backend = null;
      }
      throw e;
    }
  }

  /** The serving instance with this model's TokenizerInfo and compiler (made on first use). */
  private ready(): Promise<Backend> {
    if (this.backend) return this.backend;
    const p = (async () => {
      this.vocab ??= this.o.vocabulary();
      const v = await this.vocab;
      const inst = loadXGrammar();
      const compiler = await inst.call('sampling.grammar', async (lib) => {
        const info = await lib.TokenizerInfo.createTokenizerInfo(v.encoded, v.vocabType, v.prependSpace, this.o.vocabSize, this.o.stopTokenIds);
        return lib.GrammarCompiler.createGrammarCompiler(info);
      });
      return { inst, compiler };
    })();
    this.backend = p;
    p.catch(() => this.backend === p && (this.backend = null));
    return p;
  }
}
