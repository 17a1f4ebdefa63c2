/**
 * Structured outputs of a request: OpenAI's `response_format` and vLLM's `structured_outputs` /
 * `guided_*` fields → the one grammar spec the engine runs (actors/messages.ts GrammarSpec). At
 * most one of them may ask for a grammar (400 naming the second). `checkStructured` has xgrammar
 * check it before the request runs (BAD_GRAMMAR: 400 naming the field, with xgrammar's reason).
 *
 * guided_choice / structured_outputs.choice become an EBNF alternation of the strings, as JSON
 * string literals (xgrammar's EBNF takes the same escapes).
 */
import type { GrammarSpec } from '../../messages.ts';
import { badRequest } from './errors.ts';
import type { ChatBody, CompletionBody } from './schema/endpoints.ts';

/** A request's grammar and the field it came from (for errors). */
export interface StructuredOutput {
  spec: GrammarSpec;
  param: string;
}

type Body = CompletionBody | ChatBody;
type SchemaValue = string | Record<string, unknown>;

const schemaText = (v: SchemaValue) => (typeof v === 'string' ? v : JSON.stringify(v));
const choiceGrammar = (choices: string[]) => `root ::= ${choices.map((c) => JSON.stringify(c)).join(' | ')}`;

/** The request's grammar, or null; 400 when two fields ask for one. */
export function structuredOutput(b: Body): StructuredOutput | null {
  const found: StructuredOutput[] = [];
  const so = b.structured_outputs;
  const anyWhitespace = so?.disable_any_whitespace === false;
  const json = (schema: SchemaValue | undefined): GrammarSpec => ({ type: 'json', ...(schema !== undefined ? { schema: schemaText(schema) } : {}), ...(anyWhitespace ? { anyWhitespace } : {}) });
  const rf = b.response_format;
  if (rf?.type === 'json_object') found.push({ spec: json(undefined), param: 'response_format' });
  if (rf?.type === 'json_schema') found.push({ spec: json(rf.json_schema.schema), param: 'response_format.json_schema.schema' });
  if (b.guided_json != null) found.push({ spec: json(b.guided_json), param: 'guided_json' });
  if (b.guided_regex != null) found.push({ spec: { type: 'regex', pattern: b.guided_regex }, param: 'guided_regex' });
  if (b.guided_choice != null) found.push({ spec: { type: 'ebnf', grammar: choiceGrammar(b.guided_choice) }, param: 'guided_choice' });
  if (b.guided_grammar != null) found.push({ spec: { type: 'ebnf', grammar: b.guided_grammar }, param: 'guided_grammar' });
  if (so) {
    if (so.json !== undefined) found.push({ spec: json(so.json), param: 'structured_outputs.json' });
    if (so.regex !== undefined) found.push({ spec: { type: 'regex', pattern: so.regex }, param: 'structured_outputs.regex' });
    if (so.choice !== undefined) found.push({ spec: { type: 'ebnf', grammar: choiceGrammar(so.choice) }, param: 'structured_outputs.choice' });
    if (so.grammar !== undefined) found.push({ spec: { type: 'ebnf', grammar: so.grammar }, param: 'structured_outputs.grammar' });
    if (so.json_object === true) found.push({ spec: json(undefined), param: 'structured_outputs.json_object' });
    if (found.length === 0 || !found.some((f) => f.param.startsWith('structured_outputs'))) {
      throw badRequest("'structured_outputs' needs one of json, regex, choice, grammar, json_object", 'structured_outputs', 'invalid_value');
    }
  }
  if (found.length > 1) throw badRequest(`'${found[1].param}' and '${found[0].param}' both ask for a structured output: give one`, found[1].param, 'invalid_value');
  return found[0] ?? null;
}
