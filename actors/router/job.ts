/**
 * A request as the runner tracks it: the client's spec, the tokens streamed so far, the current
 * attempt, and how it ends (`done`). See request-runner.ts for the lifecycle.
 */
import type { MicroserveError } from '../../common/errors.ts';
import type { FinishReason, SamplingParams, TokenLogprob } from '../messages.ts';
import type { AttemptContext } from './attempt-context.ts';
import type { RoutedRequest } from './strategy-api.ts';
import type { LoadedStrategy } from './strategy-loader.ts';
import type { PlanEngine } from './types.ts';

export interface ActivePlan {
  version: number;
  engines: PlanEngine[];
  strategy: LoadedStrategy;
  /** Requests that started under this plan and have not finished. */
  inFlight: number;
}

export interface JobSpec {
  promptIds: number[];
  sampling: SamplingParams;
}

export interface JobResult {
  finish: FinishReason;
  numTokens: number;
  numAttempts: number;
  /** Set when finish is 'error'. */
  error?: MicroserveError;
}

export type Outcome = { kind: 'finished'; reason: FinishReason; error?: MicroserveError } | { kind: 'failed'; reason: string } | { kind: 'cancelled' };

export interface Attempt {
  id: string;
  req: RoutedRequest;
  ctx: AttemptContext;
  outcome: Promise<Outcome>;
  settle: (o: Outcome) => void;
  watchdog: NodeJS.Timeout | null;
}

export class Job {
  readonly startedAt = performance.now();
  firstTokenAt: number | null = null;
  /** When an engine first accepted it (start_generate answered): the end of its router queue time. */
  acceptedAt: number | null = null;
  lastTokenAt: number | null = null;
  readonly generated: number[] = [];
  readonly excluded = new Set<string>();
  cancelled: FinishReason | null = null;
  attempt: Attempt | null = null;
  readonly done: Promise<JobResult>;
  resolve!: (r: JobResult) => void;
  wake: (() => void) | null = null;
  /** The prompt's logprobs, once an engine sent them (requests with sampling.promptLogprobs). */
  promptLogprobs: TokenLogprob[] | null = null;

  constructor(
    readonly id: string,
    readonly spec: JobSpec,
    readonly plan: ActivePlan,
    /** Gets each batch of tokens streamed, with their logprobs when the request asked for them. */
    readonly sink: (tokens: number[], logprobs?: TokenLogprob[]) => void,
    /** Gets the prompt's logprobs once (requests with sampling.promptLogprobs), before the first tokens. */
    readonly onPrompt: (logprobs: TokenLogprob[]) => void = () => {},
  ) {
    this.done = new Promise((r) => (this.resolve = r));
  }

  /** Ends the request early ('abort': the client left; 'stop': a stop string matched). */
  cancel(reason: 'abort' | 'stop'): void {
    if (this.cancelled) return;
    this.cancelled = reason;
    this.attempt?.settle({ kind: 'cancelled' });
    // abort at once, even mid-strategy (a remote_send in progress stops; nothing starts after it)
    void this.attempt?.ctx.abandon();
    this.wake?.();
  }
}
