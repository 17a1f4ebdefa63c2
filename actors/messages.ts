/**
 * Every actor message type, in one place, as zod schemas: each schema is the message's check
 * (run by the receiving actor on every message, see `messageParser`), its type (`z.infer`) and
 * its docs. Messages are plain msgpack-able objects: numbers, strings, arrays, plain objects and
 * Uint8Array (binary, never base64).
 *
 * The schemas check shape (types, integer-ness, sizes); what needs the receiver's state (a token id
 * below the vocabulary size, `end` within the prompt, a page id of a reservation) is checked by
 * the receiver and refused with its own typed error. A message that fails its schema is refused
 * with BAD_MESSAGE naming the field (`start_generate.sampling.maxTokens`), before any use.
 *
 * Paths: `router`, `engine/<name>`, `kv/<name>`, `supervisor/<host>`, `control`, `nvshmem`,
 * `proc/<nodeId>`. A query's reply is the handler's return value; a typed failure is a
 * MicroserveError.
 */
import { z } from 'zod';
import type { MemoryPlan, NativeStatus } from '../native/backend.ts';
import type { LoopDelayStats } from '../common/loop-monitor.ts';
import { MicroserveError } from '../common/errors.ts';

// ---------------------------------------------------------------------------------------------
// Field types shared by the messages

/** [MAX_TOKENS=1048576] token ids in one message (prompts, streams). */
export const MAX_TOKENS = 1 << 20;
/** [MAX_PAGES=1048576] page ids in one message. */
export const MAX_PAGES = 1 << 20;

const uint = () => z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** Request ids: one id ties prep_recv, remote_send and start_generate together. */
const RequestId = z.string().min(1).max(256);
const Name = z.string().regex(/^[a-zA-Z0-9_.-]{1,128}$/);
const ActorPath = z.string().regex(/^[a-z]+(\/[a-zA-Z0-9_.-]{1,128})?$/);
/**
 * An array of non-negative integers, checked in one plain loop: the hot path (prompts of 100k
 * tokens, token streams, kv_write page lists) cannot afford a schema call per element. The
 * issue names the first bad index (`promptIds[7]`). The array is kept as sent, not copied.
 */
const uintArray = (max: number) =>
  z.custom<number[]>((v) => Array.isArray(v), 'expected an array').superRefine((a, ctx) => {
    if (a.length > max) return void ctx.addIssue({ code: 'custom', message: `more than ${max} entries` });
    for (let i = 0; i < a.length; i++) {
      const x = a[i];
      if (!(typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) {
        return void ctx.addIssue({ code: 'custom', path: [i], message: `${JSON.stringify(x)?.slice(0, 32)} is not an integer >= 0` });
      }
    }
  });
const TokenIds = uintArray(MAX_TOKENS);
const PageIds = uintArray(MAX_PAGES);
const Bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'expected binary (msgpack bin)');
/** Most top logprobs per token (native kMaxLogprobs). */
export const MAX_LOGPROBS = 20;
/** An optional field; null (an unset field as some senders write it) reads as unset. */
const unset = <T extends z.ZodType>(t: T) => z.preprocess((v) => (v === null ? undefined : v), t.optional());
/** [MAX_LOGIT_BIAS=300000] (token id, finite bias) pairs, checked in one loop like token arrays. */
export const MAX_LOGIT_BIAS = 300_000;
const LogitBias = z.custom<[number, number][]>((v) => Array.isArray(v), 'expected an array of [token id, bias]').superRefine((a, ctx) => {
  if (a.length > MAX_LOGIT_BIAS) return void ctx.addIssue({ code: 'custom', message: `more than ${MAX_LOGIT_BIAS} entries` });
  for (let i = 0; i < a.length; i++) {
    const e = a[i];
    if (!(Array.isArray(e) && e.length === 2 && Number.isSafeInteger(e[0]) && e[0] >= 0 && typeof e[1] === 'number' && Number.isFinite(e[1]))) {
      return void ctx.addIssue({ code: 'custom', path: [i], message: `${JSON.stringify(e)?.slice(0, 32)} is not [token id, finite bias]` });
    }
  }
});

export const RoleSchema = z.enum(['prefill', 'decode', 'both']);
export type Role = z.infer<typeof RoleSchema>;

/** [MAX_GRAMMAR_CHARS=262144] characters of a structured-output grammar (schema, regex or EBNF text). */
export const MAX_GRAMMAR_CHARS = 1 << 18;
const GrammarText = z.string().min(1).max(MAX_GRAMMAR_CHARS);
/**
 * A structured-output grammar (xgrammar, actors/text/grammar-spec.ts): each sampled token must
 * keep the output inside it; the request ends with `stop` when the grammar is complete.
 * - `json`: a JSON Schema (text); without `schema`, any JSON object. [anyWhitespace=false]
 *   false: compact JSON (`{"a": 1, "b": [2]}`), true: any whitespace between elements.
 * - `regex`: the output matches the pattern (xgrammar's regex syntax).
 * - `ebnf`: xgrammar's EBNF (GBNF style), rule `root` first.
 */
export const GrammarSpecSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('json'), schema: GrammarText.optional(), anyWhitespace: z.boolean().optional() }),
  z.strictObject({ type: z.literal('regex'), pattern: GrammarText }),
  z.strictObject({ type: z.literal('ebnf'), grammar: GrammarText }),
]);
export type GrammarSpec = z.infer<typeof GrammarSpecSchema>;

/** Sampling parameters. `temperature: 0` is greedy. */
export const SamplingParamsSchema = z.object({
  /** Number of tokens to generate at most. */
  maxTokens: uint(),
  /** [temperature=0] 0 means greedy (argmax). */
  temperature: z.number().min(0).max(1e6).default(0),
  /** [topP=1] nucleus sampling mass, in (0, 1]. */
  topP: z.number().gt(0).max(1).default(1),
  /** [seed] seeds the request's own RNG; same seed + same logits = same tokens. */
  seed: z.preprocess((v) => (v === null ? undefined : v), z.number().int().min(0).max(0xffffffff).optional()),
  /** [stopTokenIds=[]] generation ends after emitting one of these (it is included in the stream). */
  stopTokenIds: z.array(z.number().int()).max(4096).default([]),
  /** [topK=0] keep the k most likely tokens (ties at the boundary kept); 0: off. */
  topK: unset(z.number().int().min(0).max(2 ** 31 - 1)),
  /** [minP=0] keep tokens at least minP times as likely as the most likely one; 0: off. */
  minP: unset(z.number().min(0).max(1)),
  /** [repetitionPenalty=1] divides positive / multiplies negative logits of every token seen (prompt and output). */
  repetitionPenalty: unset(z.number().gt(0).max(1e6)),
  /** [presencePenalty=0] subtracted from the logit of every token already in the output. */
  presencePenalty: unset(z.number().min(-1e6).max(1e6)),
  /** [frequencyPenalty=0] times its count in the output, subtracted from a token's logit. */
  frequencyPenalty: unset(z.number().min(-1e6).max(1e6)),
  /** [logitBias=[]] (token id, bias) pairs added to the logits (ids below the vocabulary: the engine checks). */
  logitBias: unset(LogitBias),
  /** [minTokens=0] the stop tokens are banned until the output has this many tokens. */
  minTokens: unset(uint()),
  /** [logprobs] with each token, its logprob and this many top alternatives (0..20); unset: none. */
  logprobs: unset(z.number().int().min(0).max(MAX_LOGPROBS)),
  /**
   * [promptLogprobs] the first tokens message carries each prompt token's logprob (but the
   * first's) with this many top alternatives (0..20), from the raw logits (no processing,
   * temperature 1); unset: none. The engine then computes the whole prompt itself (no prefix-cache
   * hit, no KV received), and with maxTokens 0 ends after the prompt (finish 'length', no token).
   */
  promptLogprobs: unset(z.number().int().min(0).max(MAX_LOGPROBS)),
  /**
   * [numPriorOutput=0] the last numPriorOutput prompt tokens are output of an earlier attempt
   * (migration): they count as output for penalties, min_tokens and the seeded draw's step
   * (below the prompt length: the engine checks).
   */
  numPriorOutput: unset(uint()),
  /**
   * [grammar] structured output: only tokens the grammar accepts are sampled (a mask applied
   * before everything else); the engine replays the numPriorOutput tokens through it first.
   */
  grammar: unset(GrammarSpecSchema),
});
export type SamplingParams = z.infer<typeof SamplingParamsSchema>;

/** A generated token's logprob and the top alternatives ([token id, logprob], best first). */
export interface TokenLogprob {
  logprob: number;
  top: [number, number][];
}

/**
 * One TokenLogprob per token of a tokens message, checked in one loop (it rides the token stream):
 * logprobs are numbers (-Infinity allowed, NaN not), at most MAX_LOGPROBS alternatives of
 * [token id, logprob].
 */
const TokenLogprobs = z.custom<TokenLogprob[]>((v) => Array.isArray(v), 'expected an array').superRefine((a, ctx) => {
  if (a.length > MAX_TOKENS) return void ctx.addIssue({ code: 'custom', message: `more than ${MAX_TOKENS} entries` });
  const isLogprob = (x: unknown) => typeof x === 'number' && !Number.isNaN(x);
  for (let i = 0; i < a.length; i++) {
    const e = a[i] as { logprob?: unknown; top?: unknown } | null;
    if (typeof e !== 'object' || e === null) return void ctx.addIssue({ code: 'custom', path: [i], message: 'expected {logprob, top}' });
    if (!isLogprob(e.logprob)) return void ctx.addIssue({ code: 'custom', path: [i, 'logprob'], message: 'expected a number' });
    const top = e.top;
    if (!Array.isArray(top) || top.length > MAX_LOGPROBS) return void ctx.addIssue({ code: 'custom', path: [i, 'top'], message: `expected at most ${MAX_LOGPROBS} [token id, logprob] pairs` });
    for (let k = 0; k < top.length; k++) {
      const t = top[k];
      if (!(Array.isArray(t) && t.length === 2 && Number.isSafeInteger(t[0]) && t[0] >= 0 && isLogprob(t[1]))) {
        return void ctx.addIssue({ code: 'custom', path: [i, 'top', k], message: 'expected [token id, logprob]' });
      }
    }
  }
});

/** An engine's KV pool in an NVSHMEM job's symmetric heap: members reach it by PE. */
export const KvNvshmemAddrSchema = z.object({
  /** The job: members of one `up` (name + start epoch); only members of one job can write. */
  job: z.string().min(1).max(1024),
  pe: uint(),
  numPages: uint(),
  pageBytes: uint(),
});
export type KvNvshmemAddr = z.infer<typeof KvNvshmemAddrSchema>;

/** A CUDA engine's KV pool as other processes on its host can open it (cudaIpcGetMemHandle). */
export const KvIpcAddrSchema = z.object({
  /** 64-byte cudaIpcMemHandle_t of the page pool. */
  handle: Bytes.refine((b) => b.length === 64, 'must be 64 bytes'),
  /** UUID (hex) of the pool's GPU. */
  deviceUuid: z.string().max(128),
  /** Host name and process id: IPC needs the same host and another process. */
  host: z.string().max(1024),
  pid: uint(),
  /** Pages in the pool (bounds the page ids). */
  numPages: uint(),
  pageBytes: uint(),
});
export type KvIpcAddr = z.infer<typeof KvIpcAddrSchema>;

/** Where a decode engine parked the KV slots it reserved for `[matchedLen, end)`. */
export const KvAddrSchema = z.object({
  /** Engine that owns the slots, e.g. `d0`. */
  engine: Name,
  /** Page ids covering token positions `[0, end)`: pageIds[i] holds positions [i*pageSize, (i+1)*pageSize). */
  pageIds: PageIds,
  pageSize: z.number().int().min(1).max(1 << 16),
  /** Positions `[matchedLen, end)` are the ones the sender must write. */
  matchedLen: uint(),
  end: uint(),
  /** Transports the receiver accepts, fastest first, e.g. ['cuda-ipc', 'host']. */
  transports: z.array(z.string().max(64)).max(16),
  /** The receiver's KV pool over CUDA IPC; present when `transports` lists 'cuda-ipc'. */
  ipc: KvIpcAddrSchema.optional(),
  /** The receiver's place in an NVSHMEM job; present when `transports` lists 'nvshmem'. */
  nvshmem: KvNvshmemAddrSchema.optional(),
});
export type KvAddr = z.infer<typeof KvAddrSchema>;

// ---------------------------------------------------------------------------------------------
// Engine: `engine/<name>`

/** Data parallel in one message: equals start_generate with begin=0. Streams `tokens` to replyTo. */
export const GenerateMsgSchema = z.object({
  type: z.literal('generate'),
  id: RequestId,
  promptIds: TokenIds,
  sampling: SamplingParamsSchema,
  /** Actor path that receives `TokensMsg` for this request. */
  replyTo: ActorPath,
});
export type GenerateMsg = z.infer<typeof GenerateMsgSchema>;

/**
 * Reserve KV slots for `[matched, end)` of `promptIds` on this (decode) engine. Admission
 * controlled: refuses with KV_PAGES_EXHAUSTED instead of waiting. The reservation expires after
 * `ttlMs` unless a start_generate for `id` arrives; abort releases it. Reply: `PrepRecvResult`.
 */
export const PrepRecvMsgSchema = z.object({
  type: z.literal('prep_recv'),
  id: RequestId,
  promptIds: TokenIds,
  end: uint(),
  /** [ttlMs=30000] reservation deadline. */
  ttlMs: z.number().int().min(1).max(86_400_000).optional(),
});
export type PrepRecvMsg = z.infer<typeof PrepRecvMsgSchema>;
export interface PrepRecvResult {
  matchedLen: number;
  kvAddr: KvAddr;
}

/**
 * On the sender: compute the KV of `promptIds[0, end)` it lacks (reusing its prefix cache), write
 * positions `[begin, end)` into `kvAddr`'s slots on the receiver, layer by layer where the
 * transport allows. Replies once every byte has landed. Reply: `RemoteSendResult`.
 */
export const RemoteSendMsgSchema = z.object({
  type: z.literal('remote_send'),
  id: RequestId,
  promptIds: TokenIds,
  begin: uint(),
  end: uint(),
  kvAddr: KvAddrSchema,
  /** [ttlMs=30000] the whole operation's deadline; TRANSFER_TIMEOUT after it. */
  ttlMs: z.number().int().min(1).max(86_400_000).optional(),
});
export type RemoteSendMsg = z.infer<typeof RemoteSendMsgSchema>;
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
export const StartGenerateMsgSchema = z.object({
  type: z.literal('start_generate'),
  id: RequestId,
  promptIds: TokenIds,
  begin: uint(),
  sampling: SamplingParamsSchema,
  replyTo: ActorPath,
});
export type StartGenerateMsg = z.infer<typeof StartGenerateMsgSchema>;

/** Abort a request at any stage; releases its pages and reservation. Reply: `{ aborted: boolean }`. */
export const AbortMsgSchema = z.object({ type: z.literal('abort'), id: RequestId });
export type AbortMsg = z.infer<typeof AbortMsgSchema>;

/** How many leading tokens of `promptIds` this engine has cached. Reply: `{ matchedLen }`. */
export const MatchPrefixMsgSchema = z.object({ type: z.literal('match_prefix'), promptIds: TokenIds });
export type MatchPrefixMsg = z.infer<typeof MatchPrefixMsgSchema>;

/** Host transport: page bytes for a reservation, sender → receiver. Reply: `{ ok: true }`. */
export const KvWriteMsgSchema = z.object({
  type: z.literal('kv_write'),
  id: RequestId,
  /** Receiver page ids, in the order of `data`'s pages. */
  pageIds: PageIds.refine((a) => a.length > 0, 'needs at least one page'),
  /** (numPages, pageBytes) page-major bytes, the backend's page layout. */
  data: Bytes,
});
export type KvWriteMsg = z.infer<typeof KvWriteMsgSchema>;

/**
 * GPU push transports (receiver side). The sender writes into this engine's reserved `pageIds`
 * of request `id` from the GPU, layer by layer while it prefills. `kv_push_begin` leases those
 * pages (abort or expiry of the reservation keeps them out of the pool while the lease lives) for
 * `ttlMs` plus a grace; reply `{ ok: true }`. `kv_push_end` ends the lease once the sender's writes
 * are complete (`ok`: the pages now hold the KV); reply `{ ok: true, bytes }` or a typed error
 * (TRANSFER_TIMEOUT when the lease had already ended).
 */
export const KvPushBeginMsgSchema = z.object({ type: z.literal('kv_push_begin'), id: RequestId, pageIds: PageIds, ttlMs: z.number().int().min(1).max(86_400_000) });
export type KvPushBeginMsg = z.infer<typeof KvPushBeginMsgSchema>;
export const KvPushEndMsgSchema = z.object({ type: z.literal('kv_push_end'), id: RequestId, ok: z.boolean() });
export type KvPushEndMsg = z.infer<typeof KvPushEndMsgSchema>;

/** Change the engine's role in place (hot reload). Reply: `{ role }`. */
export const SetRoleMsgSchema = z.object({ type: z.literal('set_role'), role: RoleSchema });
export type SetRoleMsg = z.infer<typeof SetRoleMsgSchema>;

export const StatusMsgSchema = z.object({ type: z.literal('status') });
export type StatusMsg = z.infer<typeof StatusMsgSchema>;

/** Evict every cached prefix no request holds (benchmarks, between runs). Reply: `{ evictedPages }`. */
export const FlushCacheMsgSchema = z.object({ type: z.literal('flush_cache') });
export type FlushCacheMsg = z.infer<typeof FlushCacheMsgSchema>;

/**
 * TEST ONLY: the next `count` forwards of the engine throw, to test step-failure isolation.
 * Refused (BAD_MESSAGE) unless the engine runs with test hooks (MICROSERVE_TEST_HOOKS=1).
 * Reply: `{ numStepsToFail }`.
 */
export const TestFailStepsMsgSchema = z.object({ type: z.literal('test_fail_steps'), count: z.number().int().min(0).max(1_000_000) });
export type TestFailStepsMsg = z.infer<typeof TestFailStepsMsgSchema>;

export const EngineMsgSchema = z.discriminatedUnion('type', [
  GenerateMsgSchema,
  PrepRecvMsgSchema,
  RemoteSendMsgSchema,
  StartGenerateMsgSchema,
  AbortMsgSchema,
  MatchPrefixMsgSchema,
  KvWriteMsgSchema,
  KvPushBeginMsgSchema,
  KvPushEndMsgSchema,
  SetRoleMsgSchema,
  FlushCacheMsgSchema,
  TestFailStepsMsgSchema,
  StatusMsgSchema,
]);
export type EngineMsg = z.infer<typeof EngineMsgSchema>;

// ---------------------------------------------------------------------------------------------
// KV-cache manager: `kv/<name>` (read-only view of an engine's pages)

/** `status` → KvPageStats + `numEvictedPages`; `check` → `{ ok, stats }`; `match` → `{ matchedLen }`. */
export const KvActorMsgSchema = z.discriminatedUnion('type', [
  StatusMsgSchema,
  z.object({ type: z.literal('check') }),
  z.object({ type: z.literal('match'), promptIds: TokenIds }),
]);
export type KvActorMsg = z.infer<typeof KvActorMsgSchema>;

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
  /** [host] the engine loop's host time around the forwards (actors/engine/host-timing.ts). */
  host?: HostTimes;
}

/**
 * Host time of an engine's loop, cumulative since start, in ms. A step's *gap* is the wall time
 * from its forward's result to the next forward's submission in the same busy period: the backend
 * (the GPU) has nothing to run meanwhile. The phases are where the loop's own time goes, inside
 * the gap or (with overlap) while the next forward runs.
 */
export interface HostTimes {
  /** Forwards submitted. */
  numForwards: number;
  /** Gaps measured (forwards that followed another one without the loop going idle). */
  numGaps: number;
  /** Sum of the gaps. */
  gapMs: number;
  /** Sum of forward times: submission to result (the backend's run plus the hand-back to the loop). */
  forwardMs: number;
  /** Scheduling the next step (scheduler.ts: which tokens of which requests, KV pages, preemption). */
  scheduleMs: number;
  /** Building the forward's inputs and submitting it (tokens, page tables, sampling rows, the addon's copy). */
  buildMs: number;
  /** Applying a step's sampled tokens: progress, the cheap finish checks (stop ids, max tokens, length, aborts), page releases. */
  updateMs: number;
  /** Token messages of a step to their destinations (encoding, socket writes). */
  sendMs: number;
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
  /** [overlap] the loop submits step t+1 before sending step t's tokens (EngineCoreOptions.overlap). */
  overlap?: boolean;
  counters: EngineCounters;
  /** The backend's memory plan (weights / arena / KV bytes, KV tokens, longest request, caps). */
  plan?: MemoryPlan;
  /** [eventLoop] the engine process's event-loop delays since it started (common/loop-monitor.ts). */
  eventLoop?: LoopDelayStats;
}

// ---------------------------------------------------------------------------------------------
// Router-bound stream: engine → `replyTo`

export const FinishReasonSchema = z.enum(['stop', 'length', 'abort', 'error']);
export type FinishReason = z.infer<typeof FinishReasonSchema>;

/** [MAX_TOKENS_ITEMS=65536] requests in one `tokens_batch` (a step holds at most maxNumSeqs). */
export const MAX_TOKENS_ITEMS = 65536;

/** Tokens produced for request `id`, in order, never repeated. `finish` marks its last item. */
export const TokensItemSchema = z.object({
  id: RequestId,
  tokens: TokenIds,
  /** One per token when the request asked for logprobs. */
  logprobs: TokenLogprobs.optional(),
  /** Once, with the first message, when the request asked for promptLogprobs: prompt tokens 1.. in order. */
  promptLogprobs: TokenLogprobs.optional(),
  finish: FinishReasonSchema.optional(),
  error: z.object({ code: z.string().max(64), message: z.string().max(65536) }).optional(),
});
export type TokensItem = z.infer<typeof TokensItemSchema>;

/** One request's tokens as a message of its own (what a script or a test double may send). */
export const TokensMsgSchema = z.object({ type: z.literal('tokens'), engine: Name, ...TokensItemSchema.shape });
export type TokensMsg = z.infer<typeof TokensMsgSchema>;

/**
 * What engines stream to a request's `replyTo`: the tokens of one step (or of one abort) for every
 * request of that destination, one item per request, in order. One message (one ws frame) per
 * step and destination, not one per token.
 */
export const TokensBatchMsgSchema = z.object({ type: z.literal('tokens_batch'), engine: Name, items: z.array(TokensItemSchema).max(MAX_TOKENS_ITEMS) });
export type TokensBatchMsg = z.infer<typeof TokensBatchMsgSchema>;

/** The items of a `tokens` or `tokens_batch` message (for receivers that take both). */
export function tokensItems(msg: TokensMsg | TokensBatchMsg): TokensItem[] {
  return msg.type === 'tokens_batch' ? msg.items : [msg];
}

/** `router`: engines' token streams, and `status` → RouterStatus. */
export const RouterMsgSchema = z.discriminatedUnion('type', [TokensMsgSchema, TokensBatchMsgSchema, StatusMsgSchema]);
export type RouterMsg = z.infer<typeof RouterMsgSchema>;

// ---------------------------------------------------------------------------------------------
// Control plane: `control`, `supervisor/<host>`, `keeper/<host>`, `proc/<nodeId>`, `nvshmem`

/**
 * `control` (in `up`): `status` → ClusterStatus; `kill {path, process}` kills an actor as a crash
 * would or SIGKILLs its process (both come back under the restart policy); `restart {path}` brings
 * a failed (or any) actor back now; `topology` → the running topology; `apply {topology}` (a
 * Topology object or YAML text, re-validated like a file) → ApplyReport.
 */
export const ControlMsgSchema = z.discriminatedUnion('type', [
  StatusMsgSchema,
  z.object({ type: z.literal('kill'), path: ActorPath, process: z.boolean().default(false) }),
  z.object({ type: z.literal('restart'), path: ActorPath }),
  z.object({ type: z.literal('topology') }),
  z.object({ type: z.literal('apply'), topology: z.union([z.string().max(1 << 20), z.record(z.string(), z.unknown())]) }),
]);
export type ControlMsg = z.infer<typeof ControlMsgSchema>;

/** An engine's place in an NVSHMEM job, as `up` assigns it. */
export const NvshmemSpecSchema = z.object({
  /** Job name: host, members and epoch. */
  job: z.string().min(1).max(1024),
  rank: uint(),
  nranks: z.number().int().min(1).max(1 << 16),
});
export type NvshmemSpec = z.infer<typeof NvshmemSpecSchema>;

/**
 * An engine's step budget when its spec gives none (`engines[].maxBatchTokens`): 1024 tokens on a
 * GPU, 512 on CPU. On a GPU a mixed step reads the weights once for its decodes and its prefill
 * chunk, and at high concurrency a 512-token budget left room for only ~171 of 256 decodes a step
 * (random 512 in / 256 out): on one H200 (2026-12-03, bench/results/serve-load-gpu.md) 1024 took
 * C = 256 from 94.3% to 99.2% of the serving bound for ITL p99 33 ms instead of 22 at C = 128
 * (2.2x the mean TPOT). On CPU a step's cost grows with its tokens, so a larger budget buys no
 * throughput, only longer inter-token gaps.
 */
export function defaultMaxBatchTokens(device: string): number {
  return device.startsWith('cuda') ? 1024 : 512;
}

/**
 * The engine of an engine ProcSpec: a topology `engines` entry (topology/types.ts EngineSpec),
 * with the same fields, defaults and strictness as topology/schema.ts's EngineSchema. It is
 * written out here rather than imported because messages sit below topology/ in the layer order
 * (test/arch/imports.test.ts); test/actors/messages.test.ts checks that the two list the same fields.
 */
export const EngineSpecSchema = z.strictObject({
  name: Name,
  role: RoleSchema.default('both'),
  device: z.string().max(256).default('cpu'),
  host: Name.default('local'),
  /** A number of pages, or 'auto' (GPU: what gpuMemoryUtilization leaves; CPU: 512). */
  kvPages: z.union([z.number().int().min(1).max(Number.MAX_SAFE_INTEGER), z.literal('auto')]).optional(),
  pageSize: z.number().int().min(1).max(4096).default(16),
  /** [defaultMaxBatchTokens(device)] tokens per step. */
  maxBatchTokens: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  maxNumSeqs: z.number().int().min(1).max(65536).default(256),
  gpuMemoryUtilization: z.number().gt(0).max(1).default(0.9),
  threads: z.number().int().min(0).max(4096).default(0),
  grammarWorkers: z.number().int().min(1).max(64).optional(),
});

/** What a node supervisor starts: one OS process per spec, hosting a node of the cluster. */
export const ProcSpecSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('engine'),
    /** Node id of the process, `engine-<name>`. */
    nodeId: Name,
    engine: EngineSpecSchema,
    model: z.string().min(1).max(4096),
    transport: z.string().max(64),
    /** The engine's NVSHMEM job (`transport: nvshmem`, a GPU engine with peers on its host). */
    nvshmem: NvshmemSpecSchema.optional(),
  }),
  z.object({
    /** Any module exporting `start(system, args)`: tests and extensions. */
    kind: z.literal('module'),
    nodeId: Name,
    module: z.string().min(1).max(4096),
    args: z.unknown().optional(),
    /** Actor paths the module will spawn (for status before it is up). */
    paths: z.array(ActorPath).max(4096),
  }),
]);
export type ProcSpec = z.infer<typeof ProcSpecSchema>;

/** `supervisor/<host>`: start {spec}, stop {nodeId, graceMs}, kill {nodeId}, restart {nodeId}, status. */
export const SupervisorMsgSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('start'), spec: ProcSpecSchema }),
  z.object({ type: z.literal('stop'), nodeId: Name, graceMs: z.number().int().min(0).max(600_000).optional() }),
  z.object({ type: z.literal('kill'), nodeId: Name }),
  /** Relaunch a process now (a failed one too) with a fresh crash window. */
  z.object({ type: z.literal('restart'), nodeId: Name }),
  StatusMsgSchema,
]);
export type SupervisorMsg = z.infer<typeof SupervisorMsgSchema>;

/**
 * `keeper/<host>` (the keeper process of `microserve agent`, supervisors/agent-keeper.ts): kill
 * {nodeId} SIGKILLs the agent process (it comes back under the restart policy), restart {nodeId}
 * brings it back now with a fresh crash window, status → `{ host, pid, procs, actors }`.
 */
export const KeeperMsgSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('kill'), nodeId: Name }),
  z.object({ type: z.literal('restart'), nodeId: Name }),
  StatusMsgSchema,
]);
export type KeeperMsg = z.infer<typeof KeeperMsgSchema>;

/**
 * `proc/<nodeId>` (engine processes and agents, supervisors/proc-actor.ts): pid, stop_actor {path}
 * (killed as a crash would), restart_actor {path}, supervision, exit.
 */
export const ProcMsgSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('pid') }),
  z.object({ type: z.literal('stop_actor'), path: ActorPath }),
  z.object({ type: z.literal('restart_actor'), path: ActorPath }),
  z.object({ type: z.literal('supervision') }),
  z.object({ type: z.literal('exit') }),
]);
export type ProcMsg = z.infer<typeof ProcMsgSchema>;

/** `nvshmem` (the rendezvous on control): claim {job, rank}, publish {job, uid, error}, get {job}. */
export const NvshmemMsgSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('claim'), job: z.string().min(1).max(1024), rank: uint() }),
  z.object({
    type: z.literal('publish'),
    job: z.string().min(1).max(1024),
    uid: Bytes.refine((b) => b.length === 128, 'must be 128 bytes').nullable(),
    error: z.string().max(65536).optional(),
  }),
  z.object({ type: z.literal('get'), job: z.string().min(1).max(1024) }),
]);
export type NvshmemMsg = z.infer<typeof NvshmemMsgSchema>;

// ---------------------------------------------------------------------------------------------
// The check every actor runs on what it receives

type MessageUnion = z.ZodDiscriminatedUnion<readonly z.ZodObject<{ type: z.ZodLiteral<string> } & z.ZodRawShape>[], 'type'>;

/**
 * The check of one actor kind: `messageParser('kv/e0', KvActorMsgSchema)(msg)` returns the
 * message as its schema's type (defaults filled, unknown fields dropped) or throws BAD_MESSAGE
 * naming the field (`info.field`: `type`, `sampling.maxTokens`, `kvAddr.pageIds[3]`...).
 */
export function messageParser<S extends MessageUnion>(actor: string, schema: S): (msg: unknown) => z.output<S> {
  const types = schema.options.map((o) => o.shape.type.value as string);
  return (msg) => {
    const r = schema.safeParse(msg);
    if (r.success) return r.data;
    const type = (msg as { type?: unknown } | null)?.type;
    if (typeof type !== 'string' || !types.includes(type)) {
      const got = typeof type === 'string' ? `'${type.slice(0, 64)}'` : type === undefined ? '(none)' : `(a ${type === null ? 'null' : typeof type})`;
      throw new MicroserveError('BAD_MESSAGE', `${actor}: unknown message type ${got} (expected ${types.join(', ')})`, { field: 'type' });
    }
    const issue = r.error.issues[0];
    const field = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '');
    throw new MicroserveError('BAD_MESSAGE', `${actor}: ${type}.${field}: ${issue.message}`, { field, type });
  };
}

