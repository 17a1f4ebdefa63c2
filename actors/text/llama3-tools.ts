/**
 * Llama 3.1's JSON tool calling in the preset chat format (llama3.ts): the conversation with its
 * tools rewritten as plain turns, the way Meta's template writes them (tools in the first user
 * message, `tools_in_user_message` being its default):
 * - a system turn `Environment: ipython` (before the system message's text);
 * - the first user turn opens with the instruction and each tool as JSON (indent 4);
 * - an assistant turn with tool calls is `{"name": ..., "parameters": ...}` (several joined by "; ");
 * - a tool result is an `ipython` turn holding its content as JSON (the template's `tojson`).
 * The template's knowledge-cutoff and date lines are left out, as the preset format leaves them
 * out of every conversation.
 */
import { MicroserveError } from '../../common/errors.ts';
import { messageText, parseArguments, type ChatMessage, type ChatTool } from './tokenizer.ts';

const INSTRUCTION =
  'Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n' +
  'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.\n\n';

/** Plain (role, text) turns for the preset renderer. BAD_REQUEST when tools come without a user message. */
export function llama3ToolTurns(messages: readonly ChatMessage[], tools: readonly ChatTool[] | undefined): ChatMessage[] {
  const out: ChatMessage[] = [];
  const hasTools = !!tools && tools.length > 0;
  let rest = messages;
  if (hasTools) {
    const sys = messages[0]?.role === 'system' ? messageText(messages[0]).trim() : '';
    if (sys) rest = messages.slice(1);
    out.push({ role: 'system', content: `Environment: ipython\n\n${sys}` });
  }
  let isToolsPlaced = !hasTools;
  for (const m of rest) {
    if (!isToolsPlaced && m.role === 'user') {
      const list = tools!.map((t) => JSON.stringify(t, null, 4) + '\n\n').join('');
      out.push({ role: 'user', content: INSTRUCTION + list + messageText(m).trim() });
      isToolsPlaced = true;
    } else if (m.role === 'assistant' && m.tool_calls?.length) {
      const calls = m.tool_calls.map((c) => JSON.stringify({ name: c.function.name, parameters: parseArguments(c.function.arguments) }));
      out.push({ role: 'assistant', content: calls.join('; ') });
    } else if (m.role === 'tool') {
      out.push({ role: 'ipython', content: JSON.stringify(messageText(m)) });
    } else {
      out.push({ role: m.role, content: messageText(m) });
    }
  }
  if (!isToolsPlaced) throw new MicroserveError('BAD_REQUEST', 'tools go into the first user message (Llama 3.1 format), and there is none');
  return out;
}
