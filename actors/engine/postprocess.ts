/**
 * The first half of a step's postprocessing, owned by the engine core: applying a forward's
 * results to its requests — progress (computed, prefilled and recomputed positions), the sampled
 * token, and the finish checks that need nothing but the token (stop token ids, max tokens, the
 * model's length), with page releases. It is what scheduling the next step needs, so with overlap
 * it runs before the next forward is submitted; the second half, sending the tokens, runs after
 * (`RequestTable.flush`). A failed forward fails its own requests here.
 */
import type { MicroserveError } from '../../common/errors.ts';
import type { EngineCounters, FinishReason } from '../messages.ts';
import type { Request } from './request.ts';
import type { RequestTable } from './request-table.ts';
import type { StepEntry } from './scheduler.ts';
import type { StepPart } from './step-runner.ts';

export class StepPostprocess {
  constructor(
    private readonly table: RequestTable,
    private readonly counters: EngineCounters,
    /** The model's longest context: a request that reaches it ends with `length`. */
    private readonly maxPositions: number,
  ) {}

  /** True when the token `req` samples now ends it by length (max tokens or the model's context) unless it ends otherwise. */
  endsByLength(req: Request): boolean {
    const s = req.sampling;
    return !!s && (req.outputIds.length + 1 >= s.maxTokens || req.totalLen + 1 >= this.maxPositions);
  }

  /** Advances each request of a forward that ran; samples, queues tokens and finishes where due. A failed one fails its requests. */
  apply({ entries, tokens, error }: StepPart): void {
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
      let finish: FinishReason | null = null;
      if (req.isGrammarComplete || (s.stopTokenIds.length > 0 && s.stopTokenIds.includes(tok))) finish = 'stop';
      else if (req.outputIds.length >= s.maxTokens || req.totalLen >= this.maxPositions) finish = 'length';
      const lps = req.lastLogprobs ? [req.lastLogprobs] : undefined;
      if (finish) this.table.stopGenerate(req, finish, [tok], undefined, lps);
      else this.table.emit(req, [tok], undefined, undefined, lps);
    }
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
