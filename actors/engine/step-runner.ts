/**
 * Runs one step's forward for the engine core, and isolates its failure.
 *
 * Grammar masks (structured outputs): a step whose grammar rows' masks are still being computed
 * (grammar/grammars.ts `prepare`) is submitted at once with a mask gate; the masks go to the
 * backend (`supplyMasks`) when the grammar workers have written them, while the forward runs, and
 * the backend waits for them only between the logits and the sampling.
 *
 * Step-failure policy. A forward that throws (the backend's error, e.g. a device allocation or
 * launch failure) is not an engine death and does not touch requests outside the step: the step
 * runs once more split in two halves, each its own forward (a failure that depends on the step's
 * size gets through at half of it; sampling is per sequence, so tokens are the same). A half that
 * fails again fails only its own requests, with STEP_FAILED naming the step's shape and the
 * backend's error; a step of one sequence fails at once. The router treats STEP_FAILED as final
 * for the request (no migration, no retry loop).
 */
import type { ForwardBatch, ForwardMaskGate, ForwardSampling } from '../../native/backend.ts';
import { MicroserveError, isMicroserveError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import type { EngineCounters } from '../messages.ts';
import { PromptLogprobsBatch } from './prompt-logprobs.ts';
import type { StepMasks } from './grammar/grammars.ts';
import type { Request } from './request.ts';
import { SamplingBatch, SamplingScratch, type SamplingSlots } from './sampling-params.ts';
import type { StepEntry } from './scheduler.ts';
import { checkInt } from './validate.ts';

/** Entries of one forward: `tokens` when it ran, else the error that failed them. */
export interface StepPart {
  entries: StepEntry[];
  tokens: Int32Array | null;
  error?: MicroserveError;
}

/** One native forward of a step's entries (the KV sender's, which pushes pages where due). */
export type ForwardFn = (entries: StepEntry[], batch: ForwardBatch & { sampling: ForwardSampling }) => Promise<Int32Array>;

/** Where a step's grammar masks come from, and where late ones go (the engine core wires its grammars and backend). */
export interface StepMaskHooks {
  /** The masks of a step's sampling rows (null: no grammar row); see Grammars.prepare. */
  prepare(rows: readonly (Request | null)[]): StepMasks | null;
  /** A failed step's masks kept on its requests for the retry (Grammars.keepMasks). */
  keep(rows: readonly (Request | null)[], step: StepMasks): Promise<void>;
  /** Opens the forward's mask gate (Backend.supplyMasks). */
  supply(gateId: number, masks: Uint32Array): boolean;
  /** [gateTimeoutMs=180000] a gate not opened by then fails its step (MASK_TIMEOUT): longer than any grammar call. */
  gateTimeoutMs?: number;
}

export class StepRunner {
  /** Test hook (`failNextSteps`): forwards left to fail on purpose. */
  private numStepsToFail = 0;
  /** The sampling arrays, reused step after step (forwards are sequential). */
  private readonly scratch = new SamplingScratch();
  /** Mask gate ids: unique per backend while one engine core drives it (a held id is refused by the addon). */
  private nextGateId = 0;
  /** The last forward's sampling rows and grammar masks (a failed step's retry keeps them). */
  private last: { rows: (Request | null)[]; masks: StepMasks | null } | null = null;

  constructor(
    private readonly engine: string,
    private readonly counters: EngineCounters,
    private readonly forwardFn: ForwardFn,
    private readonly samplingSlots: SamplingSlots,
    private readonly masks?: StepMaskHooks,
  ) {}

  /** The step's forward, retried split in two on a failure; one part per forward that settled. */
  async run(entries: StepEntry[]): Promise<StepPart[]> {
    try {
      return [{ entries, tokens: await this.forward(entries) }];
    } catch (e) {
      const err = this.stepFailed(entries, e);
      // the halves run with the masks the whole step had (computed meanwhile), up front
      if (this.last?.masks && this.masks) await this.masks.keep(this.last.rows, this.last.masks);
      if (entries.length < 2) return [{ entries, tokens: null, error: err }];
      this.counters.stepRetries++;
      const mid = Math.ceil(entries.length / 2);
      const parts: StepPart[] = [];
      for (const half of [entries.slice(0, mid), entries.slice(mid)]) {
        try {
          parts.push({ entries: half, tokens: await this.forward(half) });
        } catch (e2) {
          parts.push({ entries: half, tokens: null, error: this.stepFailed(half, e2, err) });
        }
      }
      return parts;
    }
  }

  /** TEST ONLY: the next `count` forwards throw (see EngineCore.failNextSteps). */
  failNext(count: number): number {
    this.numStepsToFail = checkInt(count, 'test_fail_steps', 'count', 0, 1_000_000);
    return this.numStepsToFail;
  }

  /**
   * One native forward of `entries`; tokens sampled on the device (numSeqs ids, no logits), with
   * the sampling extras (sampling-params.ts SamplingBatch: penalty slots, logprobs, allowed mask).
   */
  private async forward(entries: StepEntry[]): Promise<Int32Array> {
    this.last = null;
    // rows whose chunk reaches the request's last token sample its next token; others are ignored
    const rows = entries.map(({ req, start, n }) => (req.kind === 'generate' && start + n === req.totalLen ? req : null));
    const masks = this.masks?.prepare(rows) ?? null;
    this.last = { rows, masks };
    let gate: ForwardMaskGate | undefined;
    if (masks?.ready) gate = { id: (this.nextGateId = (this.nextGateId + 1) >>> 0), timeoutMs: this.masks!.gateTimeoutMs ?? 180_000 };
    const sb = new SamplingBatch(rows, this.samplingSlots, this.scratch, masks ? (gate ? { gate } : { allowedMask: masks.masks }) : undefined);
    const prompt = PromptLogprobsBatch.of(entries); // positions whose prompt logprobs are still missing
    const sampling = prompt ? { ...sb.sampling, promptLogprobs: prompt.input } : sb.sampling;
    if (this.numStepsToFail > 0) {  // as a backend that fails once the step is built (its masks are being computed)
      this.numStepsToFail--;
      throw new MicroserveError('NATIVE_ERROR', 'forced step failure (test hook)');
    }
    const running = this.forwardFn(entries, {
      seqs: entries.map((e) => ({ tokens: e.req.slice(e.start, e.n), startPos: e.start, pageTable: e.req.seq!.pageIds })),
      logits: 'last',
      sampling,
    });
    // false when the forward ended before its gate (failed): the retry takes the masks up front
    if (gate) {
      masks!.ready!.then(() => this.masks!.supply(gate.id, masks!.masks)).catch((e) => log.error('supplying grammar masks failed', { engine: this.engine, err: e as Error }));
    }
    const tokens = await running;
    sb.commit(); // the forward ran: rebuilt penalty slots are synced, logprobs are the requests'
    prompt?.commit();
    return tokens;
  }

  /**
   * Counts a failed forward and builds its STEP_FAILED error: the step's shape and the backend's
   * error, and for a failed half of a retry, the shape and error of the step it came from.
   */
  private stepFailed(entries: StepEntry[], e: unknown, whole?: MicroserveError): MicroserveError {
    this.counters.stepFailures++;
    const numTokens = entries.reduce((a, x) => a + x.n, 0);
    const backendCode = isMicroserveError(e) ? e.code : 'NATIVE_ERROR';
    const backendMessage = (e as Error)?.message ?? String(e);
    const shape = `${entries.length} sequences / ${numTokens} tokens`;
    const message = whole
      ? `${whole.message}; retried split in two, its half of ${shape} failed again: ${backendCode}: ${backendMessage}`
      : `engine ${this.engine}: a step of ${shape} failed: ${backendCode}: ${backendMessage}`;
    log.error('step failed', { engine: this.engine, numSeqs: entries.length, numTokens, isRetry: !!whole, backendCode, err: e as Error });
    return new MicroserveError('STEP_FAILED', message, { numSeqs: entries.length, numTokens, backendCode, backendMessage });
  }
}
