/**
 * Prompt logprobs on the engine side (sampling.promptLogprobs: completions' echo with logprobs,
 * vLLM's prompt_logprobs). Token i of the prompt (i >= 1) gets its logprob from the logits of
 * position i - 1, so the engine must compute those positions itself: a request that asks gets no
 * prefix-cache hit below its first missing entry (`maxMatchLen`) and takes no received KV. Each
 * step asks the backend for the positions still missing (`PromptLogprobsBatch`: only those rows'
 * logits are computed), and a preempted request recomputes only what it lacks. The whole list
 * goes to the client once, with the request's first tokens message (request-table.ts `emit`).
 * A request's own state: prompt-logprob-state.ts.
 */
import type { ForwardPromptLogprobs } from '../../native/backend.ts';
import { MAX_LOGPROBS } from '../messages.ts';
import type { StepEntry } from './scheduler.ts';

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
