/**
 * Every actor message type, in one place, as tagged unions. Messages are plain msgpack-able
 * objects: numbers, strings, arrays, plain objects and Uint8Array (binary, never base64).
 *
 * Paths: `router`, `engine/<name>`, `kv/<name>`, `supervisor/<host>`, `control`.
 * A query's reply is the handler's return value; a typed failure is a MicroserveError.
 */
import type { NativeStatus } from '../native/backend.ts';

import type { MemoryPlan } from '../native/backend.ts';

export type Role = 'prefill' | 'decode' | 'both';

/** Sampling parameters. `temperature: 0` is greedy. */
export interface SamplingParams {
  /** Number of tokens to generate at most. */
  maxTokens: number;
  /** [temperature=0] 0 means greedy (argmax). */
  temperature: number;
  /** [topP=1] nucleus sampling mass. */
  topP: number;
  /** [seed] seeds the request's own RNG; same seed + same logits = same tokens. */
  seed?: number;
  /** [stopTokenIds=[]] generation ends after emitting one of these (it is included in the stream). */
  stopTokenIds: number[];
}

/** Where a decode engine parked the KV slots it reserved for `[matchedLen, end)`. */
export interface KvAddr {
  /** Engine that owns the slots, e.g. `d0`. */
  engine: string;
  /** Page ids covering token positions `[0, end)`: pageIds[i] holds positions [i*pageSize, (i+1)*pageSize). */
  pageIds: number[];
  pageSize: number;
  /** Positions `[matchedLen, end)` are the ones the sender must write. */
  matchedLen: number;
  end: number;
  /** Transports the receiver accepts, fastest first, e.g. ['cuda-ipc', 'host']. */
  transports: string[];
  /** The receiver's KV pool over CUDA IPC; present when `transports` lists 'cuda-ipc'. */
  ipc?: KvIpcAddr;
  /** The receiver's place in an NVSHMEM job; present when `transports` lists 'nvshmem'. */
  nvshmem?: KvNvshmemAddr;
}

/** An engine's KV pool in an NVSHMEM job's symmetric heap: members reach it by PE. */
export interface KvNvshmemAddr {
  /** The job: members of one `up` (name + start epoch); only members of one job can write. */
  job: string;
  pe: number;
  numPages: number;
  pageBytes: number;
}

/** A CUDA engine's KV pool as other processes on its host can open it (cudaIpcGetMemHandle). */
export interface KvIpcAddr {
  /** 64-byte cudaIpcMemHandle_t of the page pool. */
  handle: Uint8Array;
  /** UUID (hex) of the pool's GPU. */
  deviceUuid: string;
  /** Host name and process id: IPC needs the same host and another process. */
  host: string;
  pid: number;
  /** Pages in the pool (bounds the page ids). */
  numPages: number;
  pageBytes: number;
}

/**
 * GPU push transports (receiver side). The sender writes into this engine's reserved `pageIds`
 * of request `id` from the GPU, layer by layer while it prefills. `kv_push_begin` leases those
 * pages (abort or expiry of the reservation keeps them out of the pool while the lease lives) for
 * `ttlMs` plus a grace; reply `{ ok: true }`. `kv_push_end` ends the lease once the sender's writes
 * are complete (`ok`: the pages now hold the KV); reply `{ ok: true, bytes }` or a typed error
 * (TRANSFER_TIMEOUT when the lease had already ended).
 */
export interface KvPushBeginMsg {
  type: 'kv_push_begin';
  id: string;
  pageIds: number[];
  ttlMs: number;
}
export interface KvPushEndMsg {
  type: 'kv_push_end';
  id: string;
  ok: boolean;
}

// ---------------------------------------------------------------------------------------------
// Engine: `engine/<name>`

/** Data parallel in one message: equals start_generate with begin=0. Streams `tokens` to replyTo. */
export interface GenerateMsg {
  type: 'generate';
  id: string;
  promptIds: number[];
  sampling: SamplingParams;
  /** Actor path that receives `TokensMsg` for this request. */
  replyTo: string;
}

/**
 * Reserve KV slots for `[matched, end)` of `promptIds` on this (decode) engine. Admission
 * controlled: refuses with KV_PAGES_EXHAUSTED instead of waiting. The reservation expires after
 * `ttlMs` unless a start_generate for `id` arrives; abort releases it. Reply: `PrepRecvResult`.
 */
export interface PrepRecvMsg {
  type: 'prep_recv';
  id: string;
  promptIds: number[];
  end: number;
  /** [ttlMs=30000] reservation deadline. */
  ttlMs?: number;
}
export interface PrepRecvResult {
  matchedLen: number;
  kvAddr: KvAddr;
}

/**
 * On the sender: compute the KV of `promptIds[0, end)` it lacks (reusing its prefix cache), write
 * positions `[begin, end)` into `kvAddr`'s slots on the receiver, layer by layer where the
 * transport allows. Replies once every byte has landed. Reply: `RemoteSendResult`.
 */
export interface RemoteSendMsg {
  type: 'remote_send';
  id: string;
  promptIds: number[];
  begin: number;
  end: number;
  kvAddr: KvAddr;
  /** [ttlMs=30000] the whole operation's deadline; TRANSFER_TIMEOUT after it. */
  ttlMs?: number;
}
export interface RemoteSendResult {
  /** Tokens this engine prefilled for the send (end minus its own cache hit). */
  computedTokens: number;
  sentTokens: number;
  sentBytes: number;
  transport: string;
}

/**
 * Prefill `promptIds[begin, len)` locally (KV for `[0, begin)` must already be in this engine's
 * slots: its own cache or a prep_recv reservation that was filled), then decode and stream
 * `TokensMsg` to replyTo. Reply (the query's): `{ accepted: true }` once admitted.
 * `begin == len - 1` makes the last prompt token the decode input.
 */
export interface StartGenerateMsg {
  type: 'start_generate';
  id: string;
  promptIds: number[];
  begin: number;
  sampling: SamplingParams;
  replyTo: string;
}

/** Abort a request at any stage; releases its pages and reservation. Reply: `{ aborted: boolean }`. */
export interface AbortMsg {
  type: 'abort';
  id: string;
}

/** How many leading tokens of `promptIds` this engine has cached. Reply: `{ matchedLen }`. */
export interface MatchPrefixMsg {
  type: 'match_prefix';
  promptIds: number[];
}

/** Host transport: page bytes for a reservation, sender → receiver. Reply: `{ ok: true }`. */
export interface KvWriteMsg {
  type: 'kv_write';
  id: string;
  /** Receiver page ids, in the order of `data`'s pages. */
  pageIds: number[];
  /** (numPages, pageBytes) page-major bytes, the backend's page layout. */
  data: Uint8Array;
}

/** Change the engine's role in place (hot reload). Reply: `{ role }`. */
export interface SetRoleMsg {
  type: 'set_role';
  role: Role;
}

export interface StatusMsg {
  type: 'status';
}

/** Evict every cached prefix no request holds (benchmarks, between runs). Reply: `{ evictedPages }`. */
export interface FlushCacheMsg {
  type: 'flush_cache';
}

/**
 * TEST ONLY: the next `count` forwards of the engine throw, to test step-failure isolation.
 * Refused (BAD_MESSAGE) unless the engine runs with test hooks (MICROSERVE_TEST_HOOKS=1).
 * Reply: `{ numStepsToFail }`.
 */
export interface TestFailStepsMsg {
  type: 'test_fail_steps';
  count: number;
}

export type EngineMsg =
  | GenerateMsg
  | PrepRecvMsg
  | RemoteSendMsg
  | StartGenerateMsg
  | AbortMsg
  | MatchPrefixMsg
  | KvWriteMsg
  | KvPushBeginMsg
  | KvPushEndMsg
  | SetRoleMsg
  | FlushCacheMsg
  | TestFailStepsMsg
  | StatusMsg;

/** Page accounting; invariant: free + cached + inUse + reserved == total. */
export interface KvPageStats {
  total: number;
  free: number;
  cached: number;
  inUse: number;
  reserved: number;
}

export interface EngineCounters {
  requests: number;
  tokensPrefilled: number;
  tokensGenerated: number;
  tokensReceived: number;
  tokensSent: number;
  bytesSent: number;
  bytesReceived: number;
  prefixHitTokens: number;
  /** Transfers by transport name. */
  transfers: Record<string, number>;
  /**
   * [layerPush] forwards that pushed KV layer by layer (GPU push transports): their count, their
   * GPU compute time, and the send time left after the compute ended (exposed), in ms.
   */
  layerPush?: { forwards: number; computeMs: number; exposedMs: number };
  /** Running requests preempted (pages taken back; they re-queue and recompute). */
  preemptions: number;
  /**
   * Prefill tokens computed a second time because a preemption dropped them (positions below
   * the request's high-water mark). Preemption never generates an output token twice.
   */
  tokensRecomputed: number;
  /** Forwards that threw (each counted once, split retries included). */
  stepFailures: number;
  /** Failed steps retried split in two halves. */
  stepRetries: number;
  /** Requests ended with STEP_FAILED (or released, when already aborted) by a failed forward. */
  requestsFailedByStep: number;
  aborts: number;
}

export interface EngineStatus {
  name: string;
  role: Role;
  device: string;
  /** The backend's device and the kernel/launch options it was built with (fixed for its life). */
  native: NativeStatus;
  pid: number;
  model: string;
  numRunning: number;
  numWaiting: number;
  numReserved: number;
  /** Live GPU push leases into this engine's reserved pages (kv_push_begin without its end yet). */
  numPushLeases: number;
  kv: KvPageStats;
  /** Tokens per KV page: the pool holds `kv.total * pageSize` tokens (what a request can need at most). */
  pageSize: number;
  /** Scheduler limits: sequences and tokens per step. */
  maxNumSeqs: number;
  maxBatchTokens: number;
  counters: EngineCounters;
  /** The backend's memory plan (weights / arena / KV bytes, KV tokens, longest request, caps). */
  plan?: MemoryPlan;
}

// ---------------------------------------------------------------------------------------------
// Router-bound stream: engine → `replyTo`

export type FinishReason = 'stop' | 'length' | 'abort' | 'error';

/** Tokens produced for request `id`, in order, never repeated. `finish` marks the last message. */
export interface TokensMsg {
  type: 'tokens';
  id: string;
  engine: string;
  tokens: number[];
  finish?: FinishReason;
  error?: { code: string; message: string };
}
