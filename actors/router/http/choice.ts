/**
 * One choice of a completion: the tokens an engine streams for it → its text (stop strings, stop
 * tokens), its logprobs, and how it ended (`finish_reason`, vLLM's `stop_reason`).
 *
 * A stop token (EOS or one of stop_token_ids) ends the choice; its text is left out unless
 * include_stop_str_in_output. `stop_reason` is the stop string or stop_token_ids entry that
 * ended it, null for EOS and length.
 */
import type { FinishReason, TokenLogprob } from '../../messages.ts';
import type { Tokenizer } from '../../text/tokenizer.ts';
import type { JobResult } from '../request-runner.ts';
import type { TokenEntry } from './logprobs.ts';
import { TextOutput } from './text-output.ts';
import type { ToolCallDelta, ToolCallOutput } from './tool-calls.ts';

export interface ChoiceOptions {
  index: number;
  stop: string[];
  /** Every id that ends generation (EOS unless ignore_eos, and stop_token_ids). */
  stopTokenIds: Set<number>;
  /** The client's stop_token_ids (they are a stop_reason; EOS is not). */
  clientStopTokenIds: Set<number>;
  includeStop: boolean;
  skipSpecialTokens: boolean;
  /** Text shown before the completion (echo). */
  prefix: string;
  /** [tools=null] chat with tools: the text is read for tool calls (tool-calls.ts). */
  tools?: ToolCallOutput | null;
}

/** What a push adds to the choice. */
export interface ChoiceDelta {
  /** Content text (with tools: what is not a tool call). */
  text: string;
  ids: number[];
  logprobs: TokenEntry[];
  /** Tool-call deltas (with tools). */
  toolCalls?: ToolCallDelta[];
}

export class Choice {
  readonly ids: number[] = [];
  readonly logprobs: TokenEntry[] = [];
  private readonly out: TextOutput;
  private stopToken: number | null = null;

  constructor(
    readonly o: ChoiceOptions,
    tokenizer: Tokenizer | null,
  ) {
    this.out = new TextOutput(tokenizer?.createStreamDecoder({ skipSpecialTokens: o.skipSpecialTokens }) ?? null, o.stop, o.includeStop);
  }

  get index(): number {
    return this.o.index;
  }

  /** True once a stop string or stop token ended the text: later tokens are ignored. */
  get isStopped(): boolean {
    return this.out.stopped || this.stopToken !== null;
  }

  get text(): string {
    return this.o.prefix + this.out.text;
  }

  push(tokens: readonly number[], lps?: readonly TokenLogprob[]): ChoiceDelta {
    const d: ChoiceDelta = { text: '', ids: [], logprobs: [] };
    tokens.forEach((id, k) => {
      if (this.isStopped) return;
      this.ids.push(id);
      d.ids.push(id);
      const isStop = this.o.stopTokenIds.has(id);
      if (isStop) this.stopToken = id;
      if (isStop && !this.o.includeStop) return;
      if (lps?.[k]) {
        const e = { id, lp: lps[k] };
        this.logprobs.push(e);
        d.logprobs.push(e);
      }
      d.text += this.out.push([id]);
    });
    return this.withTools(d, false);
  }

  /** At the end: held-back text (and, with tools, held-back calls). */
  finish(): ChoiceDelta {
    return this.withTools({ text: this.out.finish(), ids: [], logprobs: [] }, true);
  }

  /** `tool_calls` when the output was tool calls and ended normally. */
  finishReason(r: JobResult): FinishReason | 'tool_calls' {
    const reason = this.isStopped ? 'stop' : r.finish;
    return reason === 'stop' && (this.o.tools?.calls.length ?? 0) > 0 ? 'tool_calls' : reason;
  }

  private withTools(d: ChoiceDelta, isFinal: boolean): ChoiceDelta {
    const tools = this.o.tools;
    if (!tools) return d;
    const a = tools.push(d.text);
    const b = isFinal ? tools.finish() : { content: '', calls: [] };
    return { ...d, text: a.content + b.content, toolCalls: [...a.calls, ...b.calls] };
  }

  stopReason(): string | number | null {
    if (this.out.matchedStop !== null) return this.out.matchedStop;
    return this.stopToken !== null && this.o.clientStopTokenIds.has(this.stopToken) ? this.stopToken : null;
  }
}
