/**
 * One unit of engine work. A `generate` request computes the KV of its tokens (prompt, then the
 * tokens it generated) and samples after the last one; a `send` request (the sender side of
 * remote_send) only computes the KV of `promptIds[0, end)` for transfer.
 *
 * Progress is one number: `numComputed`, the positions [0, numComputed) whose KV is in the
 * request's pages. Each step feeds `tokens[numComputed, numComputed + n)`; when a chunk reaches
 * the last token, the logits give the next token. Prefill, chunked prefill, decode and the
 * re-prefill after preemption are the same operation.
 */
import type { KvSeq } from '../kvcache/types.ts';
import type { FinishReason, SamplingParams, TokenLogprob } from '../messages.ts';
import { PromptLogprobState } from './prompt-logprob-state.ts';

export type RequestKind = 'generate' | 'send';
export type RequestState = 'waiting' | 'running' | 'computed' | 'finished';

export interface RequestInit {
  id: string;
  kind: RequestKind;
  /** For a send: promptIds[0, end). */
  promptIds: number[];
  sampling?: SamplingParams;
  replyTo?: string;
}

/** Key of a request in the engine's table: the sender side of a transfer has its own. */
export function requestKey(kind: RequestKind, id: string): string {
  return kind === 'send' ? `send:${id}` : id;
}

/**
 * A send's pages [first, last) (indexes into seq.pageIds) go to `dstPageIds[i]` of peer pool
 * `peerId` (the backend's id of the receiver's pool). `pushed` holds the indexes a forward wrote.
 */
export interface PushPlan {
  peerId: number;
  first: number;
  last: number;
  dstPageIds: number[];
  pushed: Set<number>;
}

export class Request {
  readonly id: string;
  readonly key: string;
  readonly kind: RequestKind;
  readonly promptIds: readonly number[];
  readonly outputIds: number[] = [];
  readonly sampling: SamplingParams | null;
  readonly replyTo: string | null;
  /**
   * Generate requests: the sampling seed (uint32; sampling.seed, else drawn at admission). Token
   * k of the output is drawn with (seed, step k), so it does not depend on which engine runs it.
   */
  readonly seed: number;
  state: RequestState = 'waiting';
  seq: KvSeq | null = null;
  numComputed = 0;
  /** Highest numComputed reached: positions below it computed again were lost to a preemption. */
  numComputedPeak = 0;
  /** Tokens this request fed in prefill mode (everything but decode inputs), preemption included. */
  numPrefilled = 0;
  /** Prefix-cache hit of the first admission, in tokens. */
  numCachedOnAdmit = -1;
  admitOrder = -1;
  isAborted = false;
  /** Why a send request stopped (abort, deadline, forward error). */
  failure: Error | null = null;
  /** Send requests over a GPU push transport: where the forwards write its pages, layer by layer. */
  push: PushPlan | null = null;
  finishReason: FinishReason | null = null;
  /** The backend's penalty-state slot (sampling-params.ts SamplingSlots); -1: none. */
  samplingSlot = -1;
  /** The slot holds this request's history (set by the first forward that rebuilt it). */
  isSlotSynced = false;
  /**
   * Grammar hook (structured outputs): the tokens allowed for the next draw, ceil(vocab / 32)
   * words, bit i = token i, when known before the step is built (after the grammar's open, or a
   * failed step's masks for its retry); null: none known up front. The engine's grammars
   * (grammar/grammars.ts) put it in the step's mask matrix.
   */
  allowedMask: Uint32Array | null = null;
  /** The grammar took this request's last token; its next mask is computed while the next step's forward runs (grammars.ts `prepare`). */
  isMaskPending = false;
  /** Which of the engine's grammar workers holds the matcher (grammars.ts); -1: none. */
  grammarWorker = -1;
  /** Its sampling needs the backend's extras (sampling-params.ts usesExtras, kept by the first SamplingBatch; null: not asked yet). */
  usesExtras: boolean | null = null;
  /** Handle of the request's grammar matcher in the engine's grammar worker (grammar/grammars.ts); -1: none. */
  grammarHandle = -1;
  /** The grammar accepts nothing more but a stop token: the request ends with `stop`. */
  isGrammarComplete = false;
  /** Logprobs of the token the last forward sampled (requests with sampling.logprobs). */
  lastLogprobs: TokenLogprob | null = null;
  /** The prompt's logprobs as the prefill computes them (requests with sampling.promptLogprobs). */
  readonly promptLogprobs: PromptLogprobState | null;
  /** Send requests: settled when [0, end) is computed (or the request fails). */
  readonly computed: Promise<void>;
  resolveComputed!: () => void;
  rejectComputed!: (e: unknown) => void;
  /** Send requests: rejects when the send is stopped (abort, deadline) at any stage. */
  readonly stopped: Promise<never>;
  rejectStopped!: (e: unknown) => void;

  constructor(init: RequestInit) {
    this.id = init.id;
    this.kind = init.kind;
    this.key = requestKey(init.kind, init.id);
    this.promptIds = init.promptIds;
    this.sampling = init.sampling ?? null;
    this.replyTo = init.replyTo ?? null;
    this.seed = (init.sampling?.seed ?? Math.floor(Math.random() * 0x100000000)) >>> 0;
    const numTop = init.kind === 'generate' ? init.sampling?.promptLogprobs : undefined;
    this.promptLogprobs = numTop !== undefined ? new PromptLogprobState(numTop, this.promptIds) : null;
    this.computed = new Promise<void>((res, rej) => {
      this.resolveComputed = res;
      this.rejectComputed = rej;
    });
    this.stopped = new Promise<never>((_res, rej) => {
      this.rejectStopped = rej;
    });
    // Observed by remote_send; never an unhandled rejection.
    this.computed.catch(() => {});
    this.stopped.catch(() => {});
  }

  get totalLen(): number {
    return this.promptIds.length + this.outputIds.length;
  }

  get numRemaining(): number {
    return this.totalLen - this.numComputed;
  }

  /**
   * At least one token must be computed to get logits; a send may be served fully from cache; a
   * request with prompt logprobs still missing computes the positions that give them.
   */
  get maxMatchLen(): number {
    if (this.kind === 'send') return this.totalLen;
    const pl = this.promptLogprobs;
    return pl && !pl.isComplete ? Math.min(pl.maxMatchLen, this.totalLen - 1) : this.totalLen - 1;
  }

  tokenAt(i: number): number {
    const p = this.promptIds.length;
    return i < p ? this.promptIds[i] : this.outputIds[i - p];
  }

  tokens(): number[] {
    return this.outputIds.length === 0 ? (this.promptIds as number[]) : [...this.promptIds, ...this.outputIds];
  }

  /** Tokens [start, start + n) as the backend wants them. */
  slice(start: number, n: number): Int32Array {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.tokenAt(start + i);
    return out;
  }

  /** How many of a chunk's tokens are prefill: all but a decode input (the last generated token). */
  prefillTokensOf(start: number, n: number): number {
    const isDecodeInside = this.outputIds.length > 0 && start + n === this.totalLen;
    return isDecodeInside ? n - 1 : n;
  }
}
