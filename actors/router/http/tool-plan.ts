/**
 * Tool calling, request side: `tools`, `tool_choice` and `parallel_tool_calls` → what the request
 * runs (vLLM's rules, in the Llama 3.x JSON tool-call format):
 * - `none` (the default without tools): the tools are still rendered into the prompt, the output is text;
 * - `auto` (the default with tools): free output; if it is a Llama 3.x JSON tool call
 *   (`{"name": ..., "parameters": ...}`, several joined by `;`), it becomes `tool_calls`;
 * - `required`: a grammar: a JSON array of at least one `{"name", "parameters"}` object whose
 *   parameters follow that tool's schema (at most one with parallel_tool_calls: false);
 * - a named function: a grammar: that function's parameters (the output is its arguments).
 * 400s name the field: tool_choice without tools, an unknown function, a structured output field
 * together with a forced tool choice, a model whose chat template has no tool support (`tools`).
 */
import type { GrammarSpec } from '../../messages.ts';
import type { ChatTool } from '../../text/tokenizer.ts';
import { badRequest } from './errors.ts';
import type { ChatBody } from './schema/endpoints.ts';

/** How the output is read: free text, maybe a tool call (auto), forced calls (required), one forced call (named). */
export type ToolMode = 'none' | 'auto' | 'required' | 'named';

export interface ToolPlan {
  tools: ChatTool[];
  mode: ToolMode;
  /** The named function (mode 'named'). */
  name: string | null;
  /** The grammar of a forced choice (required, named). */
  grammar: GrammarSpec | null;
}

type Json = Record<string, unknown>;
const ANY_OBJECT: Json = { type: 'object' };

/** The request's tool plan, or null without tools and tool_choice. `hasStructured`: a structured-output field is set. */
export function toolPlan(b: ChatBody, hasStructured: boolean): ToolPlan | null {
  const tools = (b.tools ?? []) as ChatTool[];
  const choice = b.tool_choice ?? (tools.length ? 'auto' : 'none');
  if (tools.length === 0) {
    if (choice !== 'none') throw badRequest("'tool_choice' needs 'tools'", 'tool_choice', 'invalid_value');
    return null;
  }
  const names = new Set<string>();
  tools.forEach((t, i) => {
    if (names.has(t.function.name)) throw badRequest(`'tools[${i}].function.name': '${t.function.name}' is given twice`, `tools[${i}].function.name`, 'invalid_value');
    names.add(t.function.name);
  });
  if (typeof choice === 'object' && !names.has(choice.function.name)) {
    throw badRequest(`'tool_choice.function.name': no tool is named '${choice.function.name}'`, 'tool_choice.function.name', 'invalid_value');
  }
  const mode: ToolMode = typeof choice === 'object' ? 'named' : choice;
  if (hasStructured && (mode === 'required' || mode === 'named')) {
    throw badRequest(`a structured output field and tool_choice '${mode === 'named' ? 'function' : mode}' both constrain the output: give one`, 'tool_choice', 'invalid_value');
  }
  const name = typeof choice === 'object' ? choice.function.name : null;
  let grammar: GrammarSpec | null = null;
  if (mode === 'named') grammar = { type: 'json', schema: JSON.stringify(tools.find((t) => t.function.name === name)!.function.parameters ?? ANY_OBJECT) };
  if (mode === 'required') grammar = { type: 'json', schema: JSON.stringify(requiredSchema(tools, b.parallel_tool_calls !== false)) };
  return { tools, mode, name, grammar };
}

/**
 * `[{"name": <one of the tools>, "parameters": <its schema>}, ...]` with at least one call; each
 * tool's `$defs` are hoisted to the top (its `#/$defs/...` references stay valid).
 */
function requiredSchema(tools: ChatTool[], isParallel: boolean): Json {
  const defs: Json = {};
  const items = tools.map((t, i) => {
    const params: Json = { ...(t.function.parameters ?? ANY_OBJECT) };
    for (const [k, v] of Object.entries((params.$defs as Json | undefined) ?? {})) {
      if (k in defs && JSON.stringify(defs[k]) !== JSON.stringify(v)) throw badRequest(`'tools[${i}].function.parameters': $defs '${k}' differs from another tool's`, `tools[${i}].function.parameters`, 'invalid_value');
      defs[k] = v;
    }
    delete params.$defs;
    return { type: 'object', properties: { name: { type: 'string', enum: [t.function.name] }, parameters: params }, required: ['name', 'parameters'] };
  });
  return {
    type: 'array',
    minItems: 1,
    ...(isParallel ? {} : { maxItems: 1 }),
    items: items.length === 1 ? items[0] : { anyOf: items },
    ...(Object.keys(defs).length ? { $defs: defs } : {}),
  };
}
