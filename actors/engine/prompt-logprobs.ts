/**
 * Prompt logprobs on the engine side (sampling.promptLogprobs: completions' echo with logprobs,
 * vLLM's prompt_logprobs). Token i of the prompt (i >= 1) gets its logprob from the logits of
 * position i - 1, so the engine must compute those positions itself: a request that asks gets no
 * prefix-cache hit below its first missing entry (`maxMatchLen`) and takes no received KV. Each
 * step asks the backend for the positions still missing (`PromptLogprobsBatch`: only those rows'
 * logits are computed), and a preempted request recomputes only what it lacks. The whole list
 * goes to the client once, with the request's first tokens message (request-table.ts `emit`).
 */
import type { ForwardPromptLogprobs } from '../../native/backend.ts';
import { MAX_LOGPROBS, type TokenLogprob } from '../messages.ts';
import type { Request } from './request.ts';
import type { StepEntry } from './scheduler.ts';

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

/**
 * A step's prompt logprob input (`input`, for ForwardSampling.promptLogprobs); once the forward
 * ran, `commit()` records the results in the requests. Null from `of` when no entry asks.
 */
export class PromptLogprobsBatch {
  private constructor(
    private readonly entries: StepEntry[],
    readonly input: ForwardPromptLogprobs,
  ) {}

  static of(entries: StepEntry[]): PromptLogprobsBatch | null {
    if (!entries.some(({ req }) => req.promptLogprobs && !req.promptLogprobs.isComplete)) return null;
    const numTokens = entries.reduce((a, e) => a + e.n, 0);
    const targets = new Int32Array(numTokens).fill(-1);
    const numTop = new Int32Array(entries.length);
    let t = 0;
    entries.forEach(({ req, start, n }, s) => {
      const st = req.promptLogprobs;
      if (st && !st.isComplete) {
        numTop[s] = st.numTop;
        for (let j = 0; j < n; j++) targets[t + j] = st.targetAt(start + j);
      }
      t += n;
    });
    return new PromptLogprobsBatch(entries, {
      numTop,
      targets,
      logprobsOut: new Float32Array(numTokens * (MAX_LOGPROBS + 1)),
      topIdsOut: new Int32Array(numTokens * MAX_LOGPROBS),
    });
  }

  commit(): void {
    const { targets, numTop, logprobsOut, topIdsOut } = this.input;
    let t = 0;
    this.entries.forEach(({ req, start, n }, s) => {
      for (let j = 0; j < n; j++, t++) {
        if (targets[t] < 0) continue;
        const lp = logprobsOut.subarray(t * (MAX_LOGPROBS + 1), (t + 1) * (MAX_LOGPROBS + 1));
        const top: [number, number][] = [];
        for (let k = 0; k < numTop[s]; k++) {
          const id = topIdsOut[t * MAX_LOGPROBS + k];
          if (id >= 0) top.push([id, lp[1 + k]]);
        }
        req.promptLogprobs!.set(start + j, { logprob: lp[0], top });
      }
    });
  }
}

/** The request's state when it asks for prompt logprobs (generate requests only). */
export function promptLogprobStateOf(req: Pick<Request, 'kind' | 'sampling' | 'promptIds'>): PromptLogprobState | null {
  const n = req.sampling?.promptLogprobs;
  return req.kind === 'generate' && n !== undefined ? new PromptLogprobState(n, req.promptIds) : null;
}
