/**
 * Structured outputs on one engine: the grammar of each request that has one (owned by the engine
 * core, like the penalty slots). Lifecycle of a request's grammar:
 * 1. admission (`check`, synchronous): refused at once where this engine cannot run it;
 * 2. `open`: compile (cached), make the request's matcher, replay its earlier output (migration),
 *    compute the first mask: the request joins the scheduler only then;
 * 3. after each step (`advance`): every sampled token is accepted and the mask for the next step
 *    computed at once, before the next step is built, so step t + 1 samples under it;
 * 4. `release` with the request (its matcher's WASM memory freed).
 *
 * The CUDA backend does not apply the mask yet (native/src/cuda refuses sampling extras): a
 * grammar on a non-CPU engine is refused at admission rather than served unconstrained.
 */
import { MicroserveError } from '../../../common/errors.ts';
import type { GrammarSpec } from '../../messages.ts';
import { GrammarSpecSchema } from '../../messages.ts';
import type { GrammarVocabulary } from '../../text/tokenizer.ts';
import type { Request } from '../request.ts';
import type { StepEntry } from '../scheduler.ts';
import { GrammarCompilerCache } from './compiler.ts';
import { RequestGrammar } from './request-grammar.ts';

const FIELD = 'sampling.grammar';

export interface GrammarsOptions {
  /** The backend's device: the mask runs on 'cpu' only for now. */
  device: string;
  /** The model's vocabulary for the grammar engine; null: the model has no tokenizer (grammars refused). */
  vocabulary: (() => Promise<GrammarVocabulary>) | null;
  vocabSize: number;
  /** Tokens that end generation (the model's EOS): allowed where the grammar is complete. */
  eosTokenIds: number[];
  /** [cacheSize=64] compiled grammars kept (LRU by spec text). */
  cacheSize?: number;
}

export class Grammars {
  private readonly compiler: GrammarCompilerCache | null;

  constructor(private readonly o: GrammarsOptions) {
    this.compiler = o.vocabulary ? new GrammarCompilerCache({ vocabulary: o.vocabulary, vocabSize: o.vocabSize, stopTokenIds: o.eosTokenIds, cacheSize: o.cacheSize }) : null;
  }

  /** Compiled grammars in the cache. */
  get numCached(): number {
    return this.compiler?.size ?? 0;
  }

  /** The request's grammar spec checked (BAD_REQUEST naming sampling.grammar), or undefined; refused where this engine cannot run it. */
  check(raw: unknown, op: string): GrammarSpec | undefined {
    if (raw === undefined || raw === null) return undefined;
    const r = GrammarSpecSchema.safeParse(raw);
    if (!r.success) {
      const issue = r.error.issues[0];
      const field = [FIELD, ...issue.path].join('.');
      throw new MicroserveError('BAD_REQUEST', `${op}: ${field}: ${issue.message}`, { field });
    }
    if (this.o.device !== 'cpu') throw new MicroserveError('BAD_REQUEST', `${op}: structured outputs (${FIELD}) run on the CPU backend only for now (this engine: ${this.o.device})`, { field: FIELD });
    if (!this.compiler) throw new MicroserveError('BAD_REQUEST', `${op}: structured outputs need the model's tokenizer, and this model has none`, { field: FIELD });
    return r.data;
  }

  /**
   * Makes `req`'s grammar (its sampling.grammar, checked by `check`): its matcher, the earlier
   * output replayed, the first mask. A request that ended meanwhile gets none.
   */
  async open(req: Request): Promise<void> {
    const s = req.sampling!;
    const entry = await this.compiler!.compile(s.grammar!, FIELD);
    const numPrior = s.numPriorOutput ?? 0;
    const replay = req.promptIds.slice(req.promptIds.length - numPrior);
    const g = await RequestGrammar.open(entry, this.o.eosTokenIds, replay, FIELD);
    if (req.state === 'finished') return g.dispose();
    req.grammar = g;
    req.allowedMask = g.mask;
  }

  /**
   * After a forward: each row that sampled a token for a request with a grammar feeds it and
   * computes the next mask. A token outside the grammar (a backend that ignored the mask) fails
   * the request through `fail`.
   */
  async advance(entries: StepEntry[], tokens: Int32Array, fail: (req: Request, err: MicroserveError) => void): Promise<void> {
    for (let i = 0; i < entries.length; i++) {
      const { req, start, n } = entries[i];
      const g = req.grammar;
      if (!g || req.kind !== 'generate' || start + n !== req.totalLen || req.isAborted || req.state !== 'running') continue;
      if (!g.accept(tokens[i])) {
        fail(req, new MicroserveError('NATIVE_ERROR', `the backend sampled token ${tokens[i]} outside the request's grammar mask`));
        continue;
      }
      await g.next();
      req.allowedMask = g.mask;
    }
  }

  /** Frees `req`'s grammar. */
  release(req: Request): void {
    req.grammar?.dispose();
    req.grammar = null;
    req.allowedMask = null;
  }
}
