/**
 * Tool calling, output side: one choice's text → `tool_calls` (whole responses) and OpenAI's
 * streamed tool-call deltas (`{index, id, type, function: {name, arguments}}` first, then
 * `{index, function: {arguments}}` fragments), by the request's mode (tool-plan.ts):
 * - named: the whole output is the function's arguments, streamed as they come;
 * - required: a JSON array of `{"name", "parameters"}`; each call opens once its parameters start
 *   (its name is known: the grammar keeps the schema's order) and its arguments stream as they come;
 * - auto: output that starts with `{` is held back; at the end it is either Llama 3.x JSON tool
 *   calls (`{"name": ..., "parameters"|"arguments": ...}` joined by `;`, names among the tools)
 *   or plain content, released then. Other output streams as content at once.
 * `arguments` is the raw JSON text the model wrote. With finish `length` the last call's
 * arguments may be incomplete JSON (as OpenAI's are).
 */
import { randomBytes } from 'node:crypto';
import type { ToolMode } from './tool-plan.ts';

export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** One entry of a chunk's `delta.tool_calls`. */
export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: 'function';
  function: { name?: string; arguments: string };
}

/** What a piece of output becomes: content text and tool-call deltas. */
export interface ToolOut {
  content: string;
  calls: ToolCallDelta[];
}

const newId = () => `call_${randomBytes(12).toString('hex')}`;

export class ToolCallOutput {
  readonly calls: ToolCall[] = [];
  private text = '';
  private isHolding: boolean;
  private readonly scan = new CallScanner();

  constructor(
    private readonly mode: Exclude<ToolMode, 'none'>,
    private readonly names: ReadonlySet<string>,
    private readonly name: string | null,
  ) {
    this.isHolding = mode === 'auto';
  }

  /** The message content: null when the output is tool calls. */
  get content(): string | null {
    return this.mode !== 'auto' || this.calls.length > 0 ? null : this.text;
  }

  push(delta: string): ToolOut {
    this.text += delta;
    if (this.mode === 'named') return { content: '', calls: this.named(delta) };
    if (this.mode === 'required') return { content: '', calls: this.scan.push(delta, this.calls) };
    if (this.isHolding && /\S/.test(this.text) && !this.text.trimStart().startsWith('{')) {
      this.isHolding = false;
      return { content: this.text, calls: [] };
    }
    return { content: this.isHolding ? '' : delta, calls: [] };
  }

  /** At the end: auto's held output, as calls or as content. */
  finish(): ToolOut {
    if (this.mode !== 'auto' || !this.isHolding) return { content: '', calls: [] };
    this.isHolding = false;
    const parsed = parseLlama3Calls(this.text, this.names);
    if (!parsed) return { content: this.text, calls: [] };
    return { content: '', calls: parsed.map((c, index) => this.open(index, c.name, c.arguments)) };
  }

  private named(delta: string): ToolCallDelta[] {
    if (this.calls.length === 0) return [this.open(0, this.name!, delta)];
    this.calls[0].function.arguments += delta;
    return delta ? [{ index: 0, function: { arguments: delta } }] : [];
  }

  private open(index: number, name: string, args: string): ToolCallDelta {
    const call: ToolCall = { id: newId(), type: 'function', function: { name, arguments: args } };
    this.calls.push(call);
    return { index, id: call.id, type: 'function', function: { name, arguments: args } };
  }
}

/**
 * Reads a JSON array of `{"name": ..., "parameters": {...}}` as it streams: tracks JSON depth
 * and strings, opens a call when its parameters object starts, appends their raw text.
 */
class CallScanner {
  private depth = 0;
  private isInString = false;
  private isEscaped = false;
  /** The current call's text at depth 2 (keys, the name), and whether its parameters are streaming. */
  private head = '';
  private isInArgs = false;

  push(text: string, calls: ToolCall[]): ToolCallDelta[] {
    const out: ToolCallDelta[] = [];
    let pending = '';
    const flush = () => {
      if (!pending) return;
      const i = calls.length - 1;
      calls[i].function.arguments += pending;
      const last = out[out.length - 1];
      if (last?.index === i) last.function.arguments += pending;
      else out.push({ index: i, function: { arguments: pending } });
      pending = '';
    };
    for (const c of text) {
      const depthBefore = this.depth;
      if (this.isInString) {
        if (this.isEscaped) this.isEscaped = false;
        else if (c === '\\') this.isEscaped = true;
        else if (c === '"') this.isInString = false;
      } else if (c === '"') this.isInString = true;
      else if (c === '{' || c === '[') this.depth++;
      else if (c === '}' || c === ']') this.depth--;
      if (this.isInArgs) {
        pending += c;
        if (this.depth === 2 && depthBefore === 3) (this.isInArgs = false), flush();
      } else if (depthBefore === 2 && c === '{' && /"parameters"\s*:\s*$/.test(this.head)) {
        this.isInArgs = true;
        const d: ToolCallDelta = { index: calls.length, id: newId(), type: 'function', function: { name: nameIn(this.head), arguments: '' } };
        calls.push({ id: d.id!, type: 'function', function: { name: d.function.name!, arguments: '' } });
        out.push(d);
        pending = c;
      } else if (depthBefore >= 2) {
        if (this.depth === 1) this.head = ''; // the call object closed
        else this.head += c;
      }
    }
    flush();
    return out;
  }
}

function nameIn(head: string): string {
  const m = /"name"\s*:\s*"((?:[^"\\]|\\.)*)"/.exec(head);
  try {
    return m ? (JSON.parse(`"${m[1]}"`) as string) : '';
  } catch {
    return '';
  }
}

/** Llama 3.x JSON tool calls in `text`, or null when it is not (only) that. */
export function parseLlama3Calls(text: string, names: ReadonlySet<string>): { name: string; arguments: string }[] | null {
  const s = text.trim();
  const calls: { name: string; arguments: string }[] = [];
  let i = 0;
  while (i < s.length) {
    if (s[i] !== '{') return null;
    const end = objectEnd(s, i);
    if (end < 0) return null;
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(s.slice(i, end));
    } catch {
      return null;
    }
    const args = obj.parameters ?? obj.arguments;
    if (typeof obj.name !== 'string' || !names.has(obj.name) || typeof args !== 'object' || args === null) return null;
    calls.push({ name: obj.name, arguments: JSON.stringify(args) });
    i = end;
    while (i < s.length && /[\s;]/.test(s[i])) i++;
  }
  return calls.length ? calls : null;
}

/** Index after the JSON object starting at `s[start]` ('{'), or -1 when it does not close. */
function objectEnd(s: string, start: number): number {
  let depth = 0;
  let isInString = false;
  for (let i = start; i < s.length; i++) {
    const c = s[i];
    if (isInString) {
      if (c === '\\') i++;
      else if (c === '"') isInString = false;
    } else if (c === '"') isInString = true;
    else if (c === '{' || c === '[') depth++;
    else if ((c === '}' || c === ']') && --depth === 0) return i + 1;
  }
  return -1;
}
