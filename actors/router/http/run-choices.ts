/**
 * What a completion request runs: its dependencies, its prompts with each choice's sampling, and
 * `runChoices`, which starts every choice's job (shared by the whole and the streamed answer).
 *
 * n > 1 shares the prompt's KV pages: a one-token greedy job computes (and caches) the prompt
 * first, then the n choices start from the prefix cache (one prefill, n decodes; on a multi-engine
 * plan this needs a prefix-aware strategy such as dp-prefix to land on the same engine).
 * Prompt logprobs (echo with logprobs, prompt_logprobs) are asked of one job per prompt: that
 * first job when n > 1, else the choice's own.
 */
import type { SamplingParams, TokenLogprob } from '../../messages.ts';
import type { GrammarSpec } from '../../messages.ts';
import type { Tokenizer } from '../../text/tokenizer.ts';
import type { TokenizePool } from '../../text/tokenize-pool.ts';
import type { Admission } from '../admission.ts';
import type { Job, JobResult, RequestRunner } from '../request-runner.ts';
import type { Choice } from './choice.ts';
import type { ParsedRequest } from './parse.ts';

export interface CompletionDeps {
  runner: RequestRunner;
  /** KV capacity (400) and queue limit (429) checks, before the request runs. */
  admission: Admission;
  modelName: string;
  tokenizer: Tokenizer | null;
  /** Worker threads for long prompts; null: tokenize inline. */
  tokenizePool: TokenizePool | null;
  contextLength: number;
  vocabSize: number | null;
  eosTokenIds: number[];
  defaultMaxTokens: number | null;
  /** Checks structured-output grammars before a request runs (BAD_GRAMMAR naming `field`): a grammar worker thread. */
  grammarChecker: { check(spec: GrammarSpec, field: string): Promise<void> };
}

export interface Meta {
  id: string;
  object: string;
  created: number;
  model: string;
  isChat: boolean;
  req: ParsedRequest;
  numPromptTokens: number;
}

/** One prompt with its choices' sampling. */
export interface PromptRun {
  ids: number[];
  text: string;
  sampling: SamplingParams[];
  /** Top alternatives of the prompt logprobs to ask for (undefined: none). */
  promptLogprobs?: number;
}

/**
 * Starts every choice's job (after one prefill per prompt when n > 1); `onTokens` gets each
 * choice's tokens, `onPrompt` each prompt's logprobs (runs with promptLogprobs; before their
 * choices' first tokens). Resolves with the jobs' results in choice order; `cancel` aborts them all.
 */
export function runChoices(
  deps: CompletionDeps,
  runs: PromptRun[],
  choices: Choice[],
  onTokens: (choice: Choice, tokens: number[], lps?: TokenLogprob[]) => void,
  onPrompt: (prompt: number, lps: TokenLogprob[]) => void = () => {},
): { done: Promise<JobResult[]>; cancel: () => void } {
  const jobs: Job[] = [];
  let isCancelled = false;
  const start = (choice: Choice, promptIds: number[], sampling: SamplingParams, p: number) => {
    const job: Job = deps.runner.submit(
      { promptIds, sampling },
      (tokens, lps) => {
        onTokens(choice, tokens, lps);
        if (choice.isStopped) job.cancel('stop');
      },
      (lps) => onPrompt(p, lps),
    );
    jobs.push(job);
    if (isCancelled) job.cancel('abort');
    return job.done;
  };
  const done = Promise.all(
    runs.map(async (r, p) => {
      const isShared = r.sampling.length > 1;
      if (isShared) {
        // one prefill, cached (with the prompt logprobs): the n choices then start from the prefix cache
        const warm: SamplingParams = { maxTokens: 1, temperature: 0, topP: 1, stopTokenIds: [] };
        if (r.promptLogprobs !== undefined) warm.promptLogprobs = r.promptLogprobs;
        const job = deps.runner.submit({ promptIds: r.ids, sampling: warm }, () => {}, (lps) => onPrompt(p, lps));
        jobs.push(job);
        await job.done;
      }
      const choiceSampling = (s: SamplingParams) => (isShared || r.promptLogprobs === undefined ? s : { ...s, promptLogprobs: r.promptLogprobs });
      return Promise.all(r.sampling.map((s, i) => start(choices[p * r.sampling.length + i], r.ids, choiceSampling(s), p)));
    }),
  ).then((rs) => rs.flat());
  return {
    done,
    cancel: () => {
      isCancelled = true;
      for (const j of jobs) j.cancel('abort');
    },
  };
}

export function usage(meta: Meta, numTokens: number) {
  return { prompt_tokens: meta.numPromptTokens, completion_tokens: numTokens, total_tokens: meta.numPromptTokens + numTokens };
}
