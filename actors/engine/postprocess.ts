/**
 * The first half of a step's postprocessing, owned by the engine core: applying a forward's
 * results to its requests — progress (computed, prefilled and recomputed positions), the sampled
 * token, and the finish checks that need nothing but the token (stop token ids, max tokens, the
 * model's length), with page releases. It is what scheduling the next step needs, so with overlap
 * it runs before the next forward is submitted; the second half, sending the tokens, runs after
 * (`RequestTable.flush`). A failed forward fails its own requests here.
 *
 * A grammar row's token (structured outputs) is applied like any other (the next step feeds it),
 * but sent only once the request's grammar took it (`settle`): the accept runs while the next
 * step's forward does (grammar/grammars.ts), and it decides what the token means — outside the
 * grammar (the request fails, the token is not streamed), the grammar complete (`stop`), or, at
 * the request's last token, `stop` rather than `length`. A row that ends at its token either way
 * is held out of the next step meanwhile (`RequestTable.hold`).
 */
import type { MicroserveError } from '../../common/errors.ts';
import type { EngineCounters, FinishReason, TokenLogprob } from '../messages.ts';
import type { AcceptOutcome, GrammarToken } from './grammar/grammars.ts';
import type { RequestTable } from './request-table.ts';
import type { StepEntry } from './scheduler.ts';
import type { StepPart } from './step-runner.ts';

/** A grammar row's sampled token: in the request's output (the next step feeds it), not streamed until its grammar took it. */
export interface HeldToken extends GrammarToken {
  /** How the request ends at this token if its grammar does not complete: a stop token id, or length (`isLast`). */
  finish: FinishReason | null;
  logprobs?: TokenLogprob[];
}

export class StepPostprocess {
  constructor(
    private readonly table: RequestTable,
    private readonly counters: EngineCounters,
    /** The model's longest context: a request that reaches it ends with `length`. */
    private readonly maxPositions: number,
  ) {}

  /**
   * Advances each request of a forward that ran; samples, queues tokens and finishes where due. A
   * failed one fails its requests. Grammar rows' tokens go to `held` instead of the stream, for
   * the grammars' accept (then `settle`).
   */
  apply({ entries, tokens, error }: StepPart, held: HeldToken[]): void {
    if (!tokens) return this.fail(entries, error!);
    const c = this.counters;
    for (let i = 0; i < entries.length; i++) {
      const { req, start, n } = entries[i];
      if (req.isAborted || req.state !== 'running') {
        this.table.release(req, !req.isAborted);
        continue;
      }
      // positions below the request's high-water mark were computed before a preemption
      if (start < req.numComputedPeak) c.tokensRecomputed += Math.min(start + n, req.numComputedPeak) - start;
      const numPrefill = req.prefillTokensOf(start, n);
      req.numComputed += n;
      if (req.numComputed > req.numComputedPeak) req.numComputedPeak = req.numComputed;
      req.numPrefilled += numPrefill;
      c.tokensPrefilled += numPrefill;
      if (req.numRemaining > 0) continue;
      if (req.kind === 'send') {
        this.table.sendComputed(req);
        continue;
      }
      const s = req.sampling!;
      if (s.maxTokens === 0) {  // prompt logprobs only
        this.table.stopGenerate(req, 'length');
        continue;
      }
      const tok = tokens[i];
      req.outputIds.push(tok);
      c.tokensGenerated++;
      const isLength = req.outputIds.length >= s.maxTokens || req.totalLen >= this.maxPositions;
      let finish: FinishReason | null = null;
      if (s.stopTokenIds.length > 0 && s.stopTokenIds.includes(tok)) finish = 'stop';
      else if (isLength) finish = 'length';
      const lps = req.lastLogprobs ? [req.lastLogprobs] : undefined;
      if (req.grammarHandle >= 0) {
        held.push({ req, token: tok, isLast: isLength, finish, logprobs: lps });
        if (finish) this.table.hold(req);
      } else if (finish) this.table.stopGenerate(req, finish, [tok], undefined, lps);
      else this.table.emit(req, [tok], undefined, undefined, lps);
    }
  }

  /**
   * A held grammar token once its grammar answered: streamed (with the finish apply found, or
   * `stop` where the grammar completed), or the request fails without it. A request that ended
   * meanwhile (abort, close) is left as it is; one already in the next step gets its row's token
   * discarded there (`apply` releases a request that is no longer running).
   */
  settle({ req, token, finish, logprobs }: HeldToken, outcome: AcceptOutcome): void {
    if (req.state === 'finished') return;
    if (outcome.error) return this.table.stopGenerate(req, 'error', [], outcome.error);
    const reason = outcome.isComplete ? 'stop' : finish;
    if (reason) this.table.stopGenerate(req, reason, [token], undefined, logprobs);
    else this.table.emit(req, [token], undefined, undefined, logprobs);
  }

  /** The requests of a failed forward: aborted ones give their pages back, the others end with `err`. */
  private fail(entries: StepEntry[], err: MicroserveError): void {
    for (const { req } of entries) {
      this.counters.requestsFailedByStep++;
      if (req.isAborted || req.state !== 'running') this.table.release(req, false);
      else if (req.kind === 'send') this.table.stopSend(req, err);
      else this.table.stopGenerate(req, 'error', [], err);
    }
  }
}
