/**
 * The streamed answer of a completion: server-sent events `data: {chunk}` … `data: [DONE]`, the
 * chunks of every choice interleaved as their tokens arrive (each chunk names its choice's
 * `index`). Chat streams open each choice with its role, echo with the prompt's text; every
 * choice ends with a chunk that carries `finish_reason` and `stop_reason`. stream_options:
 * `include_usage` adds a last chunk with the usage, `continuous_usage_stats` puts the usage so far
 * in every chunk. With prompt logprobs asked for (echo with logprobs, prompt_logprobs) a choice's
 * opening chunk waits for its prompt's logprobs and carries them (they come before its tokens).
 */
import type { Context } from 'hono';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import { MicroserveError } from '../../../common/errors.ts';
import type { FinishReason, TokenLogprob } from '../../messages.ts';
import type { JobResult } from '../request-runner.ts';
import type { Choice, ChoiceDelta } from './choice.ts';
import { runChoices, usage, type CompletionDeps, type Meta, type PromptRun } from './run-choices.ts';
import { toApiError } from './errors.ts';
import { chatLogprobs, completionLogprobs, echoCompletionLogprobs, vllmPromptLogprobs, type PromptLogprobs } from './logprobs.ts';

type Event = { kind: 'tokens'; choice: Choice; tokens: number[]; lps?: TokenLogprob[] } | { kind: 'prompt'; prompt: number; lps: TokenLogprob[] };

export function streamed(c: Context, deps: CompletionDeps, meta: Meta, runs: PromptRun[], choices: Choice[]): Response {
  return streamSSE(c, async (stream) => {
    const queue: Event[] = [];
    let wake: (() => void) | null = null;
    let results: JobResult[] | null = null;
    let numTokens = 0;
    const push = (ev: Event) => {
      queue.push(ev);
      wake?.();
    };
    const run = runChoices(
      deps,
      runs,
      choices,
      (choice, tokens, lps) => push({ kind: 'tokens', choice, tokens, lps }),
      (prompt, lps) => push({ kind: 'prompt', prompt, lps }),
    );
    stream.onAbort(run.cancel);
    void run.done.then((r) => {
      results = r;
      wake?.();
    });
    const withIds = meta.req.returnTokenIds || !deps.tokenizer;
    const textOffset = new Map<Choice, number>(choices.map((ch) => [ch, 0]));
    const send = (ch: Choice, d: ChoiceDelta | null, finish: FinishReason | 'tool_calls' | null, extra: Record<string, unknown> = {}) => {
      const body = chunk(meta, deps, ch, d, finish, textOffset.get(ch)!, withIds, extra);
      if (d) textOffset.set(ch, textOffset.get(ch)! + d.text.length);
      if (meta.req.continuousUsage) (body as Record<string, unknown>).usage = usage(meta, numTokens);
      return write(stream, body);
    };
    const opened = new Set<Choice>();
    // A choice's first chunks: the chat role, or echo's prompt text (with the prompt's logprobs when asked for).
    const open = async (ch: Choice, prompt: PromptLogprobs | null) => {
      if (opened.has(ch)) return;
      opened.add(ch);
      const req = meta.req;
      const vllm = prompt && req.promptLogprobsField !== null ? vllmPromptLogprobs(prompt, deps.tokenizer, req.promptLogprobsField) : null;
      if (meta.isChat) {
        const body = chunk(meta, deps, ch, null, null, 0, false, { delta: { role: 'assistant', content: '' } }) as Record<string, unknown>;
        if (vllm) body.prompt_logprobs = vllm;
        return write(stream, body);
      }
      if (!ch.o.prefix && !vllm) return;
      const body = chunk(meta, deps, ch, { text: ch.o.prefix, ids: [], logprobs: [] }, null, 0, withIds, vllm ? { prompt_logprobs: vllm } : {});
      if (req.isEchoLogprobs && prompt) body.choices[0].logprobs = echoCompletionLogprobs(prompt, deps.tokenizer, req.logprobs!);
      textOffset.set(ch, ch.o.prefix.length);
      if (req.continuousUsage) (body as Record<string, unknown>).usage = usage(meta, numTokens);
      await write(stream, body);
    };
    const isPromptDeferred = meta.req.promptLogprobs !== null;
    if (!isPromptDeferred) for (const ch of choices) await open(ch, null);
    for (;;) {
      while (queue.length > 0 && !stream.aborted) {
        const ev = queue.shift()!;
        if (ev.kind === 'prompt') {
          const n = meta.req.n;
          for (const ch of choices.slice(ev.prompt * n, (ev.prompt + 1) * n)) await open(ch, { ids: runs[ev.prompt].ids, lps: ev.lps });
          continue;
        }
        await open(ev.choice, null); // (prompt logprobs come first; never reached with them)
        if (ev.choice.isStopped) continue;
        numTokens += ev.tokens.length;
        const d = ev.choice.push(ev.tokens, ev.lps);
        if (d.text || d.logprobs.length || d.toolCalls?.length || withIds) await send(ev.choice, d, null);
      }
      if (stream.aborted) return void (await run.done);
      if (results && queue.length === 0) break;
      await new Promise<void>((r) => (wake = r));
      wake = null;
    }
    const rs = results as unknown as JobResult[];
    const failed = rs.find((r) => r.finish === 'error');
    if (failed) {
      await write(stream, toApiError(failed.error ?? new MicroserveError('NO_ENGINE', 'the request failed')).body());
    } else {
      numTokens = rs.reduce((a, r) => a + r.numTokens, 0);
      for (const [i, ch] of choices.entries()) {
        await open(ch, null);
        const tail = ch.finish();
        if (tail.text || tail.toolCalls?.length) await send(ch, tail, null);
        await send(ch, null, ch.finishReason(rs[i]), { stop_reason: ch.stopReason() });
      }
      if (meta.req.includeUsage) await write(stream, { id: meta.id, object: chunkObject(meta), created: meta.created, model: meta.model, choices: [], usage: usage(meta, numTokens) });
    }
    await stream.writeSSE({ data: '[DONE]' });
  });
}

const chunkObject = (meta: Meta) => (meta.isChat ? 'chat.completion.chunk' : 'text_completion');

function chunk(meta: Meta, deps: CompletionDeps, ch: Choice, d: ChoiceDelta | null, finish: FinishReason | 'tool_calls' | null, offset: number, withIds: boolean, extra: Record<string, unknown>): { id: string; choices: Record<string, unknown>[]; [k: string]: unknown } {
  const wantLp = meta.req.logprobs !== null && d !== null && d.logprobs.length > 0;
  const choice: Record<string, unknown> = meta.isChat
    ? { index: ch.index, delta: d ? chatDelta(d) : {}, logprobs: wantLp ? chatLogprobs(d!.logprobs, deps.tokenizer) : null, finish_reason: finish }
    : { index: ch.index, text: d?.text ?? '', logprobs: wantLp ? completionLogprobs(d!.logprobs, deps.tokenizer, offset) : null, finish_reason: finish };
  Object.assign(choice, extra);
  if (withIds && d) choice.token_ids = d.ids;
  return { id: meta.id, object: chunkObject(meta), created: meta.created, model: meta.model, choices: [choice] };
}

/** A chat chunk's delta: content, and tool-call deltas when there are some. */
function chatDelta(d: ChoiceDelta): Record<string, unknown> {
  if (!d.toolCalls?.length) return { content: d.text };
  return d.text ? { content: d.text, tool_calls: d.toolCalls } : { tool_calls: d.toolCalls };
}

function write(stream: SSEStreamingApi, obj: unknown): Promise<void> {
  return stream.writeSSE({ data: JSON.stringify(obj) });
}
