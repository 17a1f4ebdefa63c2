/**
 * Runs requests: one attempt at a time through the plan's strategy, the token stream to the
 * client's sink, and request migration when the generating engine fails.
 *
 * Lifecycle of a request (a Job):
 *   1. attempt n gets id `<job>-<n>`; the strategy starts generation on some engine;
 *   2. tokens (items of `tokens_batch` with that id) go to the sink, in order; tokens of any other (older)
 *      attempt id are dropped, so nothing is ever repeated;
 *   3. the engine finishes (stop / length): done. The engine's actor is gone, it reports a
 *      retriable error, or it is silent for `requestTimeoutMs` (watchdog): the attempt is
 *      abandoned (aborted on every engine it touched) and attempt n+1 continues from prompt +
 *      tokens streamed so far, with `maxTokens` reduced by them; nothing is missed;
 *   4. `cancel` (client gone, stop string) aborts the current attempt on its engines.
 * A request with prompt logprobs (sampling.promptLogprobs) runs data parallel whatever the plan's
 * strategy (the generating engine computes the whole prompt); they reach `onPrompt` once, and
 * later attempts do not ask for them again.
 * Retry policy (at most `maxAttempts` counted attempts):
 * - engine death (actor gone, connection lost, query timeout), a silent engine, or a failed KV
 *   transfer: counted, the request migrates (resumes elsewhere from the tokens streamed);
 * - KV_PAGES_EXHAUSTED (admission refused under a burst): load, not failure. The request waits
 *   with backoff (50 ms doubling to 1 s) and tries again, not counted; past `requestTimeoutMs`
 *   of refusals before its first token it ends with OVERLOADED (HTTP 429); after its first token
 *   it keeps waiting (a stream never ends in an error because of load);
 * - STEP_FAILED (the engine's forward failed twice: see EngineCore.forwardIsolated): final for
 *   the request, no migration; the engine is not treated as dead;
 * - the watchdog: an engine that streams nothing for `requestTimeoutMs` counts as silent only
 *   if its status shows no progress either (a request queued behind others is waiting, not lost).
 * Any other error ends the request with it.
 */
import { isMicroserveError, MicroserveError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import type { FinishReason, SamplingParams, TokenLogprob, TokensItem } from '../messages.ts';
import { AttemptContext, type AttemptDeps } from './attempt-context.ts';
import { Job, type ActivePlan, type Attempt, type JobResult, type JobSpec, type Outcome } from './job.ts';
import type { RoutedRequest } from './strategy-api.ts';
import { isEngineFailure, isTransferFailure } from './strategy-helpers.ts';
import dp from './strategies/dp.ts';

export { Job, type ActivePlan, type JobResult, type JobSpec } from './job.ts';

export interface RunnerOptions extends AttemptDeps {
  requestTimeoutMs: number;
  maxAttempts: number;
  currentPlan: () => ActivePlan;
  onJobDone: (plan: ActivePlan) => void;
}

/**
 * Engine-reported finish errors that another attempt can get past: a P/D hand-over that did not
 * complete. Engine-internal failures (STEP_FAILED) are final: they are not engine death.
 */
const RETRIABLE_ON_ENGINE = ['TRANSFER_FAILED', 'TRANSFER_TIMEOUT', 'RESERVATION_EXPIRED', 'UNKNOWN_REQUEST'];
const BUSY_BACKOFF_MS = [50, 1000];

export class RequestRunner {
  private readonly attempts = new Map<string, { job: Job; attempt: Attempt }>();
  private readonly jobs = new Set<Job>();
  private seq = 0;
  /**
   * Requests finished, resumed on another engine, failed; admissions refused for lack of KV and
   * retried (busyRetries); tokens engines sent that no client got (stale attempt, cancelled,
   * beyond max tokens).
   */
  readonly counters = { requests: 0, migrations: 0, errors: 0, busyRetries: 0, tokensDiscarded: 0 };
  /** Requests waiting for an engine of their plan to come up. */
  numWaiting = 0;
  /** Requests in flight without a first token yet (router.maxQueue bounds them). */
  numQueued = 0;
  /** Smoothed time to first token, seconds (what Retry-After is derived from). */
  ttftEwmaS = 1;
  private readonly prefix = Math.random().toString(36).slice(2, 8);

  constructor(private readonly o: RunnerOptions) {
    o.pool.onGone((name) => {
      for (const { attempt } of this.attempts.values()) {
        if (attempt.ctx.generating === name) attempt.settle({ kind: 'failed', reason: 'engine_gone' });
      }
    });
  }

  get numInFlight(): number {
    return this.jobs.size;
  }

  /** Runs a request; `sink` gets its tokens, `onPrompt` its prompt logprobs (sampling.promptLogprobs) once. */
  submit(spec: JobSpec, sink: (tokens: number[], logprobs?: TokenLogprob[]) => void, onPrompt?: (logprobs: TokenLogprob[]) => void): Job {
    const plan = this.o.currentPlan();
    const job = new Job(`${this.prefix}-${++this.seq}`, spec, plan, sink, onPrompt);
    plan.inFlight++;
    this.jobs.add(job);
    this.o.metrics.inFlight.inc();
    this.numQueued++;
    this.o.metrics.queued.inc();
    void this.run(job);
    return job;
  }

  /** Aborts every request (router shutdown). */
  cancelAll(): Promise<JobResult[]> {
    const all = [...this.jobs];
    for (const j of all) j.cancel('abort');
    return Promise.all(all.map((j) => j.done));
  }

  /** One request's tokens from `engine` (an item of its `tokens_batch`, or a `tokens` message). */
  onTokens(engine: string, msg: TokensItem): void {
    const entry = this.attempts.get(msg.id);
    const numSent = Array.isArray(msg.tokens) ? msg.tokens.length : 0;
    if (!entry) {
      this.discard(numSent);
      return log.debug('tokens for an unknown or finished attempt, dropped', { id: msg.id, engine });
    }
    const { job, attempt } = entry;
    if (job.cancelled) return this.discard(numSent);
    this.armWatchdog(job, attempt);
    if (Array.isArray(msg.promptLogprobs) && !job.promptLogprobs) {
      job.promptLogprobs = msg.promptLogprobs;
      try {
        job.onPrompt(msg.promptLogprobs);
      } catch (e) {
        log.error('prompt logprobs sink failed', { id: job.id, error: e as Error });
      }
    }
    const room = job.spec.sampling.maxTokens - job.generated.length;
    const tokens = Array.isArray(msg.tokens) ? msg.tokens.slice(0, Math.max(0, room)) : [];
    this.discard(numSent - tokens.length);
    if (tokens.length > 0) {
      const now = performance.now();
      if (job.firstTokenAt === null) this.onFirstToken(job, now);
      job.lastTokenAt = now;
      job.generated.push(...tokens);
      try {
        job.sink(tokens, Array.isArray(msg.logprobs) ? msg.logprobs.slice(0, tokens.length) : undefined);
      } catch (e) {
        log.error('token sink failed', { id: job.id, error: e as Error });
      }
    }
    if (msg.finish) {
      const error = msg.error ? new MicroserveError(msg.error.code as any, msg.error.message) : undefined;
      attempt.settle({ kind: 'finished', reason: msg.finish, error });
    } else if (job.generated.length >= job.spec.sampling.maxTokens) {
      attempt.settle({ kind: 'finished', reason: 'length' });
    }
  }

  private discard(numTokens: number): void {
    if (numTokens <= 0) return;
    this.counters.tokensDiscarded += numTokens;
    this.o.metrics.tokensDiscarded.inc(numTokens);
  }

  private onFirstToken(job: Job, now: number): void {
    job.firstTokenAt = now;
    this.numQueued--;
    this.o.metrics.queued.dec();
    this.ttftEwmaS = 0.8 * this.ttftEwmaS + 0.2 * ((now - job.startedAt) / 1000);
  }

  private async run(job: Job): Promise<void> {
    let r: Omit<JobResult, 'numTokens'>;
    try {
      r = await this.loop(job);
    } catch (e) {
      r = { finish: 'error', numAttempts: 0, error: e instanceof MicroserveError ? e : new MicroserveError('NO_ENGINE', (e as Error).message) };
    }
    this.jobs.delete(job);
    job.plan.inFlight--;
    this.o.metrics.inFlight.dec();
    if (job.firstTokenAt === null) {
      this.numQueued--;
      this.o.metrics.queued.dec();
    }
    this.record(job, r.finish);
    this.o.onJobDone(job.plan);
    job.resolve({ ...r, numTokens: job.generated.length });
  }

  private async loop(job: Job): Promise<Omit<JobResult, 'numTokens'>> {
    const maxTokens = job.spec.sampling.maxTokens;
    let numTries = 0; // every attempt, for unique ids
    let busySince: number | null = null; // start of the current streak of KV_PAGES_EXHAUSTED refusals
    for (let n = 1; ; n++) {
      if (job.cancelled) return { finish: job.cancelled, numAttempts: n - 1 };
      const isPromptDue = job.spec.sampling.promptLogprobs !== undefined && !job.promptLogprobs; // max_tokens 0 still scores the prompt
      if (job.generated.length >= maxTokens && !isPromptDue) return { finish: 'length', numAttempts: n - 1 };
      if (n > this.o.maxAttempts) {
        return { finish: 'error', numAttempts: n - 1, error: new MicroserveError('NO_ENGINE', `request ${job.id} failed on ${n - 1} attempts`) };
      }
      // a resumed request runs under the plan in force (its old engines may be gone)
      const plan = n === 1 ? job.plan : this.o.currentPlan();
      await this.waitForEngine(job, plan);
      if (job.cancelled) continue;
      const attempt = this.newAttempt(job, plan, ++numTries, n);
      try {
        // prompt logprobs need the whole prompt computed by the generating engine: data parallel
        await (attempt.req.sampling.promptLogprobs !== undefined ? dp : plan.strategy.run)(attempt.ctx, attempt.req);
        if (!attempt.ctx.generating) throw new MicroserveError('NO_ENGINE', `strategy '${plan.strategy.name}' returned without starting generation`);
      } catch (e) {
        await this.endAttempt(attempt, true);
        if (job.cancelled) continue;
        for (const x of attempt.ctx.involved) if (!this.o.pool.isAlive(x)) job.excluded.add(x);
        if (isMicroserveError(e, 'KV_PAGES_EXHAUSTED')) {
          // load, not failure: wait and try again, not counted as an attempt
          const now = performance.now();
          busySince ??= now;
          if (job.generated.length === 0 && now - busySince > this.o.requestTimeoutMs) {
            return { finish: 'error', numAttempts: n, error: new MicroserveError('OVERLOADED', `no engine could take request ${job.id} for ${this.o.requestTimeoutMs} ms (KV pages exhausted): ${(e as Error).message}`) };
          }
          this.counters.busyRetries++;
          this.o.metrics.busyRetries.inc();
          log.debug('admission refused (KV pages), waiting', { id: attempt.id, error: e as Error });
          await sleep(Math.min(BUSY_BACKOFF_MS[0] * 2 ** Math.min(10, numTries - n), BUSY_BACKOFF_MS[1]));
          n--;
          continue;
        }
        busySince = null;
        // an engine dead or silent, or a hand-over that did not complete (a reservation that
        // expired while its transfer ran late, say): another attempt, with a new id
        if (isEngineFailure(e) || isTransferFailure(e)) {
          log.info('attempt failed, retrying', { id: attempt.id, error: e as Error });
          await sleep(Math.min(50 * 2 ** (n - 1), 1000));
          continue;
        }
        return { finish: 'error', numAttempts: n, error: e instanceof MicroserveError ? e : new MicroserveError('NO_ENGINE', `strategy failed: ${(e as Error).message}`) };
      }
      busySince = null;
      if (job.acceptedAt === null) {
        job.acceptedAt = performance.now();
        this.o.metrics.queueTime.observe((job.acceptedAt - job.startedAt) / 1000);
      }
      this.armWatchdog(job, attempt);
      const out = await attempt.outcome;
      const engine = attempt.ctx.generating!;
      if (out.kind === 'cancelled') {
        await this.endAttempt(attempt, true);
        continue;
      }
      if (out.kind === 'finished' && (out.reason === 'stop' || out.reason === 'length')) {
        await this.endAttempt(attempt, false);
        return { finish: out.reason, numAttempts: n };
      }
      if (out.kind === 'finished' && out.reason === 'error' && !(out.error && RETRIABLE_ON_ENGINE.includes(out.error.code))) {
        await this.endAttempt(attempt, true);
        if (out.error?.code === 'STEP_FAILED') this.o.metrics.stepFailed.inc();
        return { finish: 'error', numAttempts: n, error: out.error ?? new MicroserveError('NATIVE_ERROR', `engine '${engine}' failed the request`) };
      }
      // engine gone, silent, aborted on its own, or a retriable engine error: resume elsewhere
      const reason = out.kind === 'failed' ? out.reason : `engine_${out.reason}`;
      log.warn('request migrates', { id: attempt.id, engine, reason, streamed: job.generated.length });
      this.o.metrics.migrations.inc({ reason });
      // the next engine computes the KV of prompt + streamed tokens again (less its cache hits)
      this.o.metrics.migrationRecomputed.inc(job.spec.promptIds.length + job.generated.length);
      this.counters.migrations++;
      job.excluded.add(engine);
      await this.endAttempt(attempt, true);
    }
  }

  private routed(job: Job, id: string, n: number): RoutedRequest {
    const s = job.spec;
    return {
      id,
      promptIds: job.generated.length ? [...s.promptIds, ...job.generated] : s.promptIds,
      numPromptTokens: s.promptIds.length,
      numGenerated: job.generated.length,
      attempt: n,
      // the engine counts the generated tokens as output (penalties, min_tokens, the seeded draw's step)
      sampling: this.attemptSampling(job),
    };
  }

  /** The engine's sampling for the job's next attempt: the output so far counts as output; prompt logprobs once. */
  private attemptSampling(job: Job): SamplingParams {
    const s: SamplingParams = { ...job.spec.sampling, maxTokens: job.spec.sampling.maxTokens - job.generated.length };
    if (job.generated.length) s.numPriorOutput = job.generated.length;
    if (job.promptLogprobs) delete s.promptLogprobs;
    return s;
  }

  /** Attempt `n` (counted) of the request, its `numTry`-th try (ids stay unique across busy retries). */
  private newAttempt(job: Job, plan: ActivePlan, numTry: number, n: number): Attempt {
    const id = `${job.id}-${numTry}`;
    let settle!: (o: Outcome) => void;
    const outcome = new Promise<Outcome>((r) => (settle = r));
    const req = this.routed(job, id, n);
    const ctx = new AttemptContext(this.o, plan.engines, plan.strategy.params, req, job.excluded);
    let isSettled = false;
    const attempt: Attempt = { id, req, ctx, outcome, watchdog: null, settle: (o) => (isSettled ? undefined : ((isSettled = true), settle(o))) };
    this.attempts.set(id, { job, attempt });
    job.attempt = attempt;
    return attempt;
  }

  private async endAttempt(a: Attempt, isAbandoned: boolean): Promise<void> {
    if (a.watchdog) clearTimeout(a.watchdog);
    a.settle({ kind: 'cancelled' });
    this.attempts.delete(a.id);
    if (isAbandoned) await a.ctx.abandon();
    else a.ctx.close();
  }

  private armWatchdog(job: Job, a: Attempt): void {
    if (a.watchdog) clearTimeout(a.watchdog);
    const engine = a.ctx.generating;
    if (!engine) return;
    const armedAt = performance.now();
    a.watchdog = setTimeout(() => {
      // no token for this request, but the engine made progress since: it is queued behind
      // other work (overload means waiting), not lost
      if (this.o.pool.progressedSince(engine, armedAt)) return this.armWatchdog(job, a);
      log.warn('engine silent, moving the request', { id: a.id, engine, timeoutMs: this.o.requestTimeoutMs });
      this.o.pool.markSuspect(engine);
      a.settle({ kind: 'failed', reason: 'engine_silent' });
    }, this.o.requestTimeoutMs);
    a.watchdog.unref();
  }

  /** Waits until an engine of the plan is alive (or the job is cancelled); NO_ENGINE after requestTimeoutMs. */
  private async waitForEngine(job: Job, plan: ActivePlan): Promise<void> {
    const isUp = () => plan.engines.some((e) => this.o.pool.isAlive(e.name));
    if (isUp()) return;
    this.o.metrics.waiting.inc();
    this.numWaiting++;
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          done();
          reject(new MicroserveError('NO_ENGINE', `no engine of the plan came up within ${this.o.requestTimeoutMs} ms`));
        }, this.o.requestTimeoutMs);
        const off = this.o.pool.onChange(() => isUp() && (done(), resolve()));
        const done = () => {
          clearTimeout(timer);
          off();
          job.wake = null;
        };
        job.wake = () => (done(), resolve());
      });
    } finally {
      this.numWaiting--;
      this.o.metrics.waiting.dec();
    }
  }

  private record(job: Job, finish: FinishReason): void {
    const m = this.o.metrics;
    m.requests.inc({ finish });
    this.counters.requests++;
    if (finish === 'error') this.counters.errors++;
    m.promptTokens.inc(job.spec.promptIds.length);
    m.generationTokens.inc(job.generated.length);
    if (finish === 'error') return;
    const end = performance.now();
    if (job.firstTokenAt !== null) m.ttft.observe((job.firstTokenAt - job.startedAt) / 1000);
    if (job.generated.length > 1 && job.lastTokenAt !== null && job.firstTokenAt !== null) {
      m.tpot.observe((job.lastTokenAt - job.firstTokenAt) / 1000 / (job.generated.length - 1));
    }
    m.e2e.observe((end - job.startedAt) / 1000);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
