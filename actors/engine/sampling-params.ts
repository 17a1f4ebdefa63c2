/**
 * The per-request sampling parameters beyond temperature / top-p (top_k, min_p, penalties,
 * logit_bias, min_tokens, logprobs) on the engine side: their check at the actor boundary, and
 * the per-step `ForwardSampling` (with `extras`) the backend takes.
 *
 * Penalty state lives in the backend, per slot (native/src/common/logit-processing.h): a request
 * that uses penalties gets a slot here; the first step that samples for it sends its history
 * (prompt + output so far, `numPriorOutput` trailing prompt tokens counted as output: a migrated
 * request rebuilds the same state) with `reset`; after that the backend counts each token it
 * samples itself, so nothing but slot ids travels per step. A slot is freed with its request.
 *
 * Grammar hook (structured outputs): the step's mask matrix from the engine's grammars
 * (grammar/grammars.ts `prepare`) goes to the backend as `ForwardSamplingExtras.allowedMask` when
 * it is known up front, or through a mask gate (`ForwardSampling.maskGate`) when it is computed
 * while the forward runs: a per-row token bitmask applied before everything else (P1 of
 * native/src/common/logit-processing.h).
 */
import { z } from 'zod';
import { MicroserveError } from '../../common/errors.ts';
import type { ForwardMaskGate, ForwardSampling, ForwardSamplingExtras } from '../../native/backend.ts';
import { MAX_LOGPROBS } from '../messages.ts';
import type { SamplingParams } from '../messages.ts';
import type { Request } from './request.ts';

export { MAX_LOGPROBS };

const finite = z.number().finite();
const extrasSchema = z.object({
  topK: z.number().int().min(0).max(2 ** 31 - 1).optional(),
  minP: z.number().min(0).max(1).optional(),
  repetitionPenalty: finite.gt(0).optional(),
  presencePenalty: finite.optional(),
  frequencyPenalty: finite.optional(),
  logitBias: z.array(z.tuple([z.number().int().min(0), finite])).max(300_000).optional(),
  minTokens: z.number().int().min(0).optional(),
  logprobs: z.number().int().min(0).max(MAX_LOGPROBS).optional(),
  promptLogprobs: z.number().int().min(0).max(MAX_LOGPROBS).optional(),
  numPriorOutput: z.number().int().min(0).optional(),
});

type Extras = Omit<SamplingParams, 'maxTokens' | 'temperature' | 'topP' | 'seed' | 'stopTokenIds'>;

/** The extension fields of `s` checked (BAD_REQUEST naming `sampling.<field>`); unset ones stay unset. */
export function checkSamplingExtras(s: Record<string, unknown>, op: string, vocabSize: number, numPrompt: number): Extras {
  const picked: Record<string, unknown> = {};
  for (const k of Object.keys(extrasSchema.shape)) if (s[k] !== undefined && s[k] !== null) picked[k] = s[k];
  const r = extrasSchema.safeParse(picked);
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = `sampling.${issue.path.join('.')}`;
    throw new MicroserveError('BAD_REQUEST', `${op}: ${field}: ${issue.message}`, { field });
  }
  const x = r.data as Extras;
  const bad = x.logitBias?.findIndex(([t]) => t >= vocabSize) ?? -1;
  if (bad >= 0) throw new MicroserveError('BAD_TOKEN', `${op}: sampling.logitBias[${bad}] is not a token id in [0, ${vocabSize})`, { field: 'sampling.logitBias' });
  if ((x.numPriorOutput ?? 0) >= numPrompt) throw new MicroserveError('BAD_REQUEST', `${op}: sampling.numPriorOutput must be below the prompt length`, { field: 'sampling.numPriorOutput' });
  return x;
}

/** True when a request needs the backend's extras (anything but temperature / top-p / seed). */
export function usesExtras(s: SamplingParams): boolean {
  return needsPenaltyState(s) || (s.topK ?? 0) > 0 || (s.minP ?? 0) > 0 || (s.logitBias?.length ?? 0) > 0 || (s.minTokens ?? 0) > 0 || s.logprobs !== undefined;
}

function needsPenaltyState(s: SamplingParams): boolean {
  return (s.repetitionPenalty ?? 1) !== 1 || (s.presencePenalty ?? 0) !== 0 || (s.frequencyPenalty ?? 0) !== 0;
}

/**
 * Penalty-state slots of the backend: the lowest free id first, so slot ids stay small, and never
 * `capacity` or more (the CUDA backend plans one state row per slot: its plan's maxNumSeqs). When
 * every slot is held, a request outside the step being built gives its slot up: its state is
 * rebuilt from its history (reset) when it samples again. A step has at most maxNumSeqs rows, so
 * it always finds its slots.
 */
export class SamplingSlots {
  private readonly free: number[] = [];
  /** The request holding each slot id handed out so far (null: free). */
  private readonly holders: (Request | null)[] = [];

  /** @param capacity [capacity=Infinity] slot ids stay below it (at least 1). */
  constructor(private readonly capacity = Infinity) {
    if (!(capacity >= 1)) throw new MicroserveError('BAD_CONFIG', `sampling slots: capacity must be >= 1 (got ${capacity})`);
  }

  /** Slots held now. */
  get numHeld(): number {
    return this.holders.length - this.free.length;
  }

  /** The request's slot, taken on first use (-1: it needs no penalty state). `step`: the requests of the step being built. */
  slotOf(req: Request, step: ReadonlySet<Request | null>): number {
    if (req.samplingSlot >= 0 || !req.sampling || !needsPenaltyState(req.sampling)) return req.samplingSlot;
    let slot: number;
    if (this.free.length > 0) slot = this.free.pop()!;
    else if (this.holders.length < this.capacity) slot = this.holders.push(null) - 1;
    else {
      slot = this.holders.findIndex((h) => h !== null && !step.has(h));
      if (slot < 0) throw new MicroserveError('NATIVE_ERROR', `sampling slots: all ${this.capacity} are held by the step itself`);
      const victim = this.holders[slot]!;
      victim.samplingSlot = -1;
      victim.isSlotSynced = false;
    }
    this.holders[slot] = req;
    req.samplingSlot = slot;
    req.isSlotSynced = false;
    return slot;
  }

  release(req: Request): void {
    if (req.samplingSlot < 0) return;
    this.holders[req.samplingSlot] = null;
    this.free.push(req.samplingSlot);
    this.free.sort((a, b) => b - a);
    req.samplingSlot = -1;
  }
}

/** One row of a step: the request, or null for a row whose token is ignored (prefill chunk, send). */
export interface SamplingRow {
  req: Request | null;
}

/**
 * The four per-sequence arrays of a step's ForwardSampling, reused from one step to the next
 * (grown when a step has more rows): the backend copies them when the forward is submitted, so a
 * step's views are free again once its forward call returned. One per step runner.
 */
export class SamplingScratch {
  private temperature = new Float32Array(0);
  private topP = new Float32Array(0);
  private seed = new Uint32Array(0);
  private step = new Uint32Array(0);

  /** Views of `n` entries (contents left over from an earlier step: the caller writes every entry). */
  take(n: number): ForwardSampling {
    if (this.temperature.length < n) {
      const size = Math.max(n, 2 * this.temperature.length);
      this.temperature = new Float32Array(size);
      this.topP = new Float32Array(size);
      this.seed = new Uint32Array(size);
      this.step = new Uint32Array(size);
    }
    return { temperature: this.temperature.subarray(0, n), topP: this.topP.subarray(0, n), seed: this.seed.subarray(0, n), step: this.step.subarray(0, n) };
  }
}

/**
 * A step's grammar masks as the engine's grammars prepared them (grammar/grammars.ts `prepare`):
 * the (rows, ceil(vocab / 32)) matrix up front, or a gate the backend waits on for it.
 */
export interface StepMaskInput {
  allowedMask?: Uint32Array;
  gate?: ForwardMaskGate;
}

/**
 * A step's sampling inputs. `sampling` goes into the forward; once it succeeded, `commit()`
 * marks the rebuilt slots as synced and hands each request its token's logprobs (`lastLogprobs`).
 */
export class SamplingBatch {
  readonly sampling: ForwardSampling;
  private readonly extras: ForwardSamplingExtras | null;

  /**
   * `scratch` (optional) lends the per-sequence arrays; without it they are new. `masks`
   * (optional): the step's grammar masks (the engine's path); without it, the rows'
   * `allowedMask`s are gathered into a new matrix.
   */
  constructor(
    private readonly rows: (Request | null)[],
    slots: SamplingSlots,
    scratch?: SamplingScratch,
    masks?: StepMaskInput,
  ) {
    const n = rows.length;
    const s: ForwardSampling = scratch ? scratch.take(n) : { temperature: new Float32Array(n), topP: new Float32Array(n), seed: new Uint32Array(n), step: new Uint32Array(n) };
    let isExtras = false;
    for (let i = 0; i < n; i++) {
      const req = rows[i];
      const p = req?.sampling;
      if (!req || !p) {
        s.temperature[i] = 0;
        s.topP[i] = 1;
        s.seed[i] = 0;
        s.step[i] = 0;
        continue;
      }
      s.temperature[i] = p.temperature;
      s.topP[i] = p.topP;
      s.seed[i] = req.seed;
      s.step[i] = numOutput(req);
      if ((req.usesExtras ??= usesExtras(p)) || req.allowedMask) isExtras = true;
    }
    if (masks) isExtras = true;
    this.extras = isExtras ? buildExtras(rows, slots, masks) : null;
    if (this.extras) s.extras = this.extras;
    if (masks?.gate) s.maskGate = masks.gate;
    this.sampling = s;
  }

  commit(): void {
    const x = this.extras;
    if (!x) return;
    this.rows.forEach((req, i) => {
      if (!req) return;
      if (x.reset![i]) req.isSlotSynced = true;
      if (x.numLogprobs![i] < 0) return;
      const lp = x.logprobsOut!.subarray(i * (MAX_LOGPROBS + 1), (i + 1) * (MAX_LOGPROBS + 1));
      const top: [number, number][] = [];
      for (let k = 0; k < x.numLogprobs![i]; k++) {
        const id = x.topIdsOut![i * MAX_LOGPROBS + k];
        if (id >= 0) top.push([id, lp[1 + k]]);
      }
      req.lastLogprobs = { logprob: lp[0], top };
    });
  }
}

/** Output tokens so far, earlier attempts included: the seeded draw's step and min_tokens' count. */
function numOutput(req: Request): number {
  return (req.sampling?.numPriorOutput ?? 0) + req.outputIds.length;
}

function buildExtras(rows: (Request | null)[], slots: SamplingSlots, masks?: StepMaskInput): ForwardSamplingExtras {
  const n = rows.length;
  const x: ForwardSamplingExtras = {
    topK: new Int32Array(n),
    minP: new Float32Array(n),
    repetitionPenalty: new Float32Array(n).fill(1),
    presencePenalty: new Float32Array(n),
    frequencyPenalty: new Float32Array(n),
    slot: new Int32Array(n).fill(-1),
    reset: new Uint8Array(n),
    histOffsets: new Int32Array(n + 1),
    histTokens: new Int32Array(0),
    histNumOutput: new Int32Array(n),
    biasOffsets: new Int32Array(n + 1),
    biasTokens: new Int32Array(0),
    biasValues: new Float32Array(0),
    numLogprobs: new Int32Array(n).fill(-1),
    logprobsOut: new Float32Array(n * (MAX_LOGPROBS + 1)),
    topIdsOut: new Int32Array(n * MAX_LOGPROBS),
  };
  const step = new Set(rows);
  const hist: Int32Array[] = [];
  const biasT: number[] = [];
  const biasV: number[] = [];
  let numHist = 0;
  rows.forEach((req, i) => {
    const s = req?.sampling;
    x.histOffsets![i + 1] = numHist;
    x.biasOffsets![i + 1] = biasT.length;
    if (!req || !s) return;
    x.topK![i] = s.topK ?? 0;
    x.minP![i] = s.minP ?? 0;
    x.repetitionPenalty![i] = s.repetitionPenalty ?? 1;
    x.presencePenalty![i] = s.presencePenalty ?? 0;
    x.frequencyPenalty![i] = s.frequencyPenalty ?? 0;
    x.numLogprobs![i] = s.logprobs ?? -1;
    const slot = slots.slotOf(req, step);
    x.slot![i] = slot;
    if (slot >= 0 && !req.isSlotSynced) {
      x.reset![i] = 1;
      const h = req.slice(0, req.totalLen);
      hist.push(h);
      numHist += h.length;
      x.histOffsets![i + 1] = numHist;
      x.histNumOutput![i] = numOutput(req);
    }
    for (const [t, b] of s.logitBias ?? []) biasT.push(t), biasV.push(b);
    if (numOutput(req) < (s.minTokens ?? 0)) for (const t of s.stopTokenIds) biasT.push(t), biasV.push(-Infinity);
    x.biasOffsets![i + 1] = biasT.length;
  });
  const masked = rows.find((r) => r?.allowedMask);
  if (masks) {
    if (masks.allowedMask) x.allowedMask = masks.allowedMask;
  } else if (masked) {
    const words = masked.allowedMask!.length;
    const m = new Uint32Array(n * words).fill(0xffffffff);
    rows.forEach((r, i) => r?.allowedMask && m.set(r.allowedMask.subarray(0, words), i * words));
    x.allowedMask = m;
  }
  const ht = new Int32Array(numHist);
  let off = 0;
  for (const h of hist) ht.set(h, off), (off += h.length);
  x.histTokens = ht;
  x.biasTokens = Int32Array.from(biasT);
  x.biasValues = Float32Array.from(biasV);
  return x;
}

