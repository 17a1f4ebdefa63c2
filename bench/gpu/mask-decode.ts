/**
 * `node-decode.ts --masks`: what structured outputs cost a decode step, through the engine's
 * path (actors/engine/grammar/: grammar workers accept each row's token, then compute its next
 * mask with xgrammar/WASM on the host; the backend's sampler applies it), at batch 64 (the
 * issue's <= 5% check), against the same decode steps without masks. Every row has a grammar (a
 * JSON array of strings; a row whose array closes opens a new one, as a new request would), so
 * every step pays for `batch` masks. Three ways, in one run:
 * - serial (before the mask gate): accept, compute the masks, then submit the step with them;
 * - gated (before the accept moved): accept, submit the step with a mask gate
 *   (ForwardSampling.maskGate), compute the masks while its forward runs and supply them
 *   (Backend.supplyMasks); the backend waits for them only between the logits and the sampling;
 * - overlapped (the engine now): submit the step with a mask gate at once, then each worker takes
 *   the previous step's tokens and computes the masks in one call (`acceptAndFill`) while the
 *   forward runs; a row whose grammar the accept finds terminated has its token discarded.
 * Reports medians per step: wall ms, the loop's wait for accepts (before submitting), the mask
 * computation (fill; overlapped: accept and fill), and
 * the backend's wait at its gate (Backend.maskGateStats); checks every sampled token is allowed.
 */
import { defaultGrammarWorkers } from '../../actors/engine/grammar/grammars.ts';
import type { GrammarStep } from '../../actors/engine/grammar/protocol.ts';
import { GrammarWorkerClient } from '../../actors/engine/grammar/worker-client.ts';
import { packSampling } from '../../actors/engine/sampler.ts';
import type { GrammarSpec } from '../../actors/messages.ts';
import type { Backend, ForwardSeq } from '../../native/backend.ts';
import type { LoadedModel } from '../../native/index.ts';

export interface MaskBenchOptions {
  batch: number;
  ctx: number;
  steps: number;
  warm: number;
  pageSize: number;
  /** [workers=defaultGrammarWorkers()] grammar worker threads (rows spread round-robin). */
  workers?: number;
}

const MODES = ['serial', 'gated', 'overlapped'] as const;
const SCHEMA: GrammarSpec = { type: 'json', schema: JSON.stringify({ type: 'array', items: { type: 'string' } }) };
const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1];
const isAllowed = (mask: Uint32Array, row: number, words: number, t: number) => ((mask[row * words + (t >> 5)] >>> (t & 31)) & 1) === 1;

/** Pages a sequence needs for the bench (prefill + the plain and both masked runs' steps). */
export function maskBenchPagesPerSeq(o: MaskBenchOptions): number {
  return Math.ceil((o.ctx + (1 + MODES.length) * (o.steps + o.warm) + 1) / o.pageSize);
}

export async function runMaskBench(model: LoadedModel, o: MaskBenchOptions): Promise<Record<string, unknown>> {
  const backend: Backend = model.backend;
  const vocab = model.config.vocabSize;
  const words = (vocab + 31) >> 5;
  const pagesPerSeq = maskBenchPagesPerSeq(o);
  const tables = Array.from({ length: o.batch }, (_, s) => Int32Array.from({ length: pagesPerSeq }, (_, i) => s * pagesPerSeq + i));
  for (let s0 = 0; s0 < o.batch; s0 += 8) {
    const seqs = tables.slice(s0, s0 + 8).map((pageTable, i) => ({ tokens: Int32Array.from({ length: o.ctx }, (_, j) => (j * 7919 + (s0 + i) * 104729 + 13) % vocab), startPos: 0, pageTable }));
    await backend.forwardTokens({ seqs, sampling: packSampling(seqs.map(() => ({ temperature: 0, topP: 1, seed: 0, step: 0 }))) });
  }
  let pos = o.ctx;
  const stepSeqs = (tokens: Int32Array): ForwardSeq[] => tables.map((pageTable, s) => ({ tokens: Int32Array.of(tokens[s]), startPos: pos, pageTable }));
  const sampling = packSampling(tables.map(() => ({ temperature: 0, topP: 1, seed: 0, step: 0 })));
  const numWorkers = o.workers ?? defaultGrammarWorkers();
  const out: Record<string, unknown> = { batch: o.batch, ctx: o.ctx, steps: o.steps, vocab, grammarWorkers: numWorkers };

  // no masks: greedy decode steps
  let tokens: Int32Array = Int32Array.from({ length: o.batch }, (_, s) => (s * 31) % vocab);
  const plain: number[] = [];
  for (let step = 0; step < o.warm + o.steps; step++, pos++) {
    const t0 = performance.now();
    tokens = await backend.forwardTokens({ seqs: stepSeqs(tokens), sampling });
    if (step >= o.warm) plain.push(performance.now() - t0);
  }
  out.noMaskWallMs = median(plain);

  // masks: one grammar per row, rows spread over the workers as an engine spreads its requests
  const workers = Array.from({ length: numWorkers }, () => new GrammarWorkerClient({ tokenizer: { folder: model.folder, isPreset: model.isPreset }, vocabSize: vocab, eosTokenIds: model.config.eosTokenIds }));
  const workerOf = (s: number) => workers[s % numWorkers];
  const masks = new Uint32Array(new SharedArrayBuffer(4 * o.batch * words));
  const handles = tables.map(() => 0);
  /** Rows whose next mask is known now (just opened): the others are filled by their worker. */
  const isKnown = tables.map(() => false);
  let nextHandle = 1;
  let numReopened = 0;
  const openRow = async (s: number) => {
    if (handles[s]) workerOf(s).close([handles[s]]), numReopened++;
    handles[s] = nextHandle++;
    const first = await workerOf(s).open(handles[s], SCHEMA, 'bench', []);
    masks.set(first.mask!, s * words);
    isKnown[s] = true;
  };
  const t0 = performance.now();
  await Promise.all(tables.map((_, s) => openRow(s)));
  out.grammarOpenMs = performance.now() - t0; // the compile (once per worker) and the matchers
  /** Each worker's rows: accept their tokens (isComplete: terminated) or fill their masks (isComplete: only a stop allowed). */
  const perWorker = async (f: (w: GrammarWorkerClient, rows: number[]) => Promise<GrammarStep[]>, rows: number[]): Promise<number[]> => {
    const done: number[] = [];
    await Promise.all(
      workers.map(async (w, k) => {
        const mine = rows.filter((s) => s % numWorkers === k);
        if (mine.length === 0) return;
        (await f(w, mine)).forEach((st, i) => {
          if (st.error) throw new Error(`row ${mine[i]}: ${st.error.message}`);
          if (st.isComplete) done.push(mine[i]);
        });
      }),
    );
    return done;
  };
  let numViolations = 0;
  for (const mode of MODES) {
    const wall: number[] = [];
    const accept: number[] = [];
    const fill: number[] = [];
    const gateWait: number[] = [];
    for (let step = 0; step < o.warm + o.steps; step++, pos++) {
      const t1 = performance.now();
      const rows = tables.map((_, s) => s);
      let complete: number[] = [];
      let fillMs = 0;
      let t2 = t1;
      const g0 = backend.maskGateStats();
      if (mode === 'overlapped') {
        const gate = { id: step, timeoutMs: 60_000 };
        t2 = performance.now(); // the loop waits for no accept before submitting (the submit itself is in the wall time)
        const forward = backend.forwardTokens({ seqs: stepSeqs(tokens), sampling: { ...sampling, maskGate: gate } });
        const pending = rows.filter((s) => !isKnown[s]);
        const f0 = performance.now();
        complete = await perWorker(async (w, mine) => {
          let accepted: GrammarStep[] = [];
          const steps = await w.acceptAndFill(mine.map((s) => ({ handle: handles[s], token: tokens[s], isLast: false })), mine.map((s) => ({ handle: handles[s], row: s })), masks.buffer as SharedArrayBuffer, words, (a) => (accepted = a));
          return steps.map((st, i) => (accepted[i].error || accepted[i].isComplete ? accepted[i] : st));
        }, pending);
        fillMs = performance.now() - f0;
        backend.supplyMasks(gate.id, masks);
        tokens = await forward;
      } else {
        const toAccept = rows.filter((s) => !isKnown[s]);
        const terminated = await perWorker((w, mine) => w.accept(mine.map((s) => ({ handle: handles[s], token: tokens[s], isLast: false }))), toAccept);
        await Promise.all(terminated.map(openRow));
        t2 = performance.now();
        const pending = rows.filter((s) => !isKnown[s]);
        const runFill = async () => {
          const f0 = performance.now();
          complete = await perWorker((w, mine) => w.fill(mine.map((s) => ({ handle: handles[s], row: s })), masks.buffer as SharedArrayBuffer, words), pending);
          fillMs = performance.now() - f0;
        };
        if (mode === 'serial') {
          await runFill();
          tokens = await backend.forwardTokens({ seqs: stepSeqs(tokens), sampling: { ...sampling, extras: { allowedMask: masks } } });
        } else {
          const gate = { id: step, timeoutMs: 60_000 };
          const forward = backend.forwardTokens({ seqs: stepSeqs(tokens), sampling: { ...sampling, maskGate: gate } });
          await runFill();
          backend.supplyMasks(gate.id, masks);
          tokens = await forward;
        }
      }
      const g1 = backend.maskGateStats();
      tokens.forEach((t, s) => (numViolations += complete.includes(s) || isAllowed(masks, s, words, t) ? 0 : 1));
      isKnown.fill(false); // every row took a masked token: its matcher takes it next step
      await Promise.all(complete.map(openRow)); // a closed array: a new grammar (its token is discarded, as the engine does)
      if (step >= o.warm) {
        wall.push(performance.now() - t1);
        accept.push(t2 - t1);
        fill.push(fillMs);
        gateWait.push(g1.waitMs - g0.waitMs);
      }
    }
    out[`${mode}WallMs`] = median(wall);
    out[`${mode}AcceptMs`] = median(accept);
    out[`${mode}FillMs`] = median(fill);
    out[`${mode}GateWaitMs`] = median(gateWait);
    out[`${mode}OverheadPct`] = (100 * (median(wall) - (out.noMaskWallMs as number))) / (out.noMaskWallMs as number);
  }
  await Promise.all(workers.map((w) => w.shutdown()));
  // the loop's wait for masks: serial = accept + fill; gated = accept + the backend's gate wait; overlapped = the gate wait
  out.serialMaskWaitMs = (out.serialAcceptMs as number) + (out.serialFillMs as number);
  out.gatedMaskWaitMs = (out.gatedAcceptMs as number) + (out.gatedGateWaitMs as number);
  out.overlappedMaskWaitMs = (out.overlappedAcceptMs as number) + (out.overlappedGateWaitMs as number);
  out.maskViolations = numViolations;
  out.grammarsReopened = numReopened;
  return out;
}
