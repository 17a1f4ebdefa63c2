/**
 * Structured-output grammars as xgrammar builds them: a grammar spec (the `grammar` field of the
 * engine's sampling parameters, actors/messages.ts `GrammarSpecSchema`) → an xgrammar `Grammar`.
 * Both run in grammar worker threads (actors/engine/grammar/): the router's checks a request's
 * grammar with `GrammarChecker` (400 naming the field); an engine's compiles the same spec against
 * its vocabulary.
 *
 * JSON formatting: with `anyWhitespace` false (the default) the output is compact JSON on one line
 * with `", "` and `": "` separators; a free whitespace rule lets a weak model emit whitespace until
 * max_tokens (OpenAI's docs warn of it for JSON mode), which vLLM answers with
 * `disable_any_whitespace`. Schemas run in xgrammar's strict mode (no property the schema does not
 * name); "any JSON object" (json_object) allows any property.
 */
import type { Grammar } from './xgrammar.ts';
import { loadXGrammar, type XGrammarInstance, type XGrammarLib } from './xgrammar.ts';

/** The same shape as actors/messages.ts GrammarSpec (the engine's `sampling.grammar`). */
export type GrammarSpecLike =
  | { type: 'json'; schema?: string; anyWhitespace?: boolean }
  | { type: 'regex'; pattern: string }
  | { type: 'ebnf'; grammar: string };

const ANY_OBJECT = '{"type": "object"}';
const SEPARATORS: [string, string] = [', ', ': '];

/** The xgrammar Grammar of `spec` on `lib` (throws what xgrammar throws: see XGrammarInstance.call). */
export function buildGrammar(lib: XGrammarLib, spec: GrammarSpecLike): Promise<Grammar> {
  switch (spec.type) {
    case 'json': {
      const anyWs = spec.anyWhitespace ?? false;
      return lib.Grammar.fromJSONSchema(spec.schema ?? ANY_OBJECT, anyWs, -1, SEPARATORS, spec.schema !== undefined);
    }
    case 'regex':
      return lib.Grammar.fromStructuralTag({ type: 'structural_tag', format: { type: 'regex', pattern: spec.pattern } });
    case 'ebnf':
      return lib.Grammar.fromEBNF(spec.grammar);
  }
}

/** A cache key of a spec: equal keys build the same grammar. */
export function grammarKey(spec: GrammarSpecLike): string {
  return JSON.stringify(spec);
}

/**
 * Checks specs in a throw-away xgrammar instance: an instance that refused one (aborted) is
 * replaced, so bad input never reaches the instance that serves requests.
 */
export class GrammarChecker {
  private inst: XGrammarInstance | null = null;

  /** Resolves when xgrammar accepts `spec`; else BAD_GRAMMAR naming `field` with xgrammar's reason. */
  async check(spec: GrammarSpecLike, field: string): Promise<void> {
    if (!this.inst?.isUsable) this.inst = loadXGrammar();
    const g = await this.inst.call(field, (lib) => buildGrammar(lib, spec));
    g.dispose();
  }
}
