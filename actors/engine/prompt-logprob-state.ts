/**
 * One request's prompt logprobs as its prefill computes them (sampling.promptLogprobs; the step
 * side is prompt-logprobs.ts). Token i of the prompt (i >= 1) gets its logprob from the logits of
 * position i - 1.
 */
import type { TokenLogprob } from '../messages.ts';

/** One request's prompt logprobs as its prefill computes them. */
export class PromptLogprobState {
  /** Entry i: prompt token i's logprob (entry 0 stays null: the first token has none). */
  private readonly entries: (TokenLogprob | null)[];
  private firstMissing = 1;
  /** Sent to the client (with the first tokens message). */
  isSent = false;

  constructor(
    /** Top alternatives per token, in [0, MAX_LOGPROBS]. */
    readonly numTop: number,
    private readonly promptIds: readonly number[],
  ) {
    this.entries = new Array<TokenLogprob | null>(promptIds.length).fill(null);
  }

  get isComplete(): boolean {
    return this.firstMissing >= this.promptIds.length;
  }

  /** Positions the prefix cache may serve: below firstMissing - 1 every entry is in. */
  get maxMatchLen(): number {
    return this.firstMissing - 1;
  }

  /** The id whose logprob the logits at `pos` give, or -1 when nothing is missing there. */
  targetAt(pos: number): number {
    const i = pos + 1;
    return i < this.promptIds.length && this.entries[i] === null ? this.promptIds[i] : -1;
  }

  /** Records the logprob the logits at `pos` gave. */
  set(pos: number, lp: TokenLogprob): void {
    this.entries[pos + 1] = lp;
    while (this.firstMissing < this.entries.length && this.entries[this.firstMissing] !== null) this.firstMissing++;
  }

  /** Prompt tokens 1.. in order (complete: no nulls). */
  list(): TokenLogprob[] {
    return this.entries.slice(1) as TokenLogprob[];
  }
}
