/** Options and handles of the engine (core and actor). */
import type { LoopMonitor } from '../../common/loop-monitor.ts';
import type { Backend } from '../../native/backend.ts';
import type { TokenizerSource } from '../text/tokenizer.ts';
import type { EngineCounters, KvIpcAddr, KvNvshmemAddr, Role, TokensItem } from '../messages.ts';
import type { TransportPicker } from './kv-transfer/transport.ts';

/**
 * Receives the engine's token stream, one call per destination and step (or abort): `items` are
 * the tokens of every request whose `replyTo` (may be '') is this one, in order. The actor sends
 * them as one `tokens_batch` message. The sink owns the array.
 */
export type TokenSink = (replyTo: string, items: TokensItem[]) => void;

export interface EngineCoreOptions {
  /** Engine name: `engine/<name>`, and `KvAddr.engine` of its reservations. */
  name: string;
  backend: Backend;
  /** [model=name] model name shown by `status`. */
  model?: string;
  /** [role='both'] shown by status; strategies read it, the engine serves every operation. */
  role?: Role;
  /**
   * [maxBatchTokens=defaultMaxBatchTokens(backend.device): 1024 on a GPU, 512 on CPU] tokens per
   * step (decodes plus prefill chunks): bounds a step's compute,
   * hence the inter-token latency of running decodes (see scheduler.ts).
   */
  maxBatchTokens?: number;
  /**
   * [maxNumSeqs=256] sequences per step and requests running at once (vLLM's max_num_seqs);
   * more wait in the engine's queue. Set from the topology's `engines[].maxNumSeqs`; the backend's
   * memory plan holds no more (a larger step fails with OVER_PLAN).
   */
  maxNumSeqs?: number;
  /**
   * [overlap=true] submit step t+1 to the backend as soon as step t's tokens are applied (progress,
   * stop ids, max tokens, length, aborts, page releases) and its scheduling allows, and send step
   * t's token messages while t+1 runs; false sends them first (the backend waits). `spawnEngine`
   * takes it from MICROSERVE_OVERLAP (common/env.ts) unless given. Shown by `status`.
   */
  overlap?: boolean;
  /**
   * [testHooks=false] TEST ONLY: accept the `test_fail_steps` message (`failNextSteps`), which
   * makes the next forwards throw. `spawnEngine` sets it from MICROSERVE_TEST_HOOKS=1.
   */
  testHooks?: boolean;
  sink: TokenSink;
  /** [pickTransport] transport to a receiver; without it remote_send fails with TRANSFER_FAILED. */
  pickTransport?: TransportPicker;
  /** [acceptTransports=['host']] transports advertised in this engine's KvAddr, fastest first. */
  acceptTransports?: string[];
  /** [ipc] this engine's KV pool over CUDA IPC, advertised in its KvAddr (CUDA engines only). */
  ipc?: KvIpcAddr;
  /** [nvshmem] this engine's place in an NVSHMEM job, advertised in its KvAddr. */
  nvshmem?: KvNvshmemAddr;
  /** [pushLeaseGraceMs=10000] how long past the sender's deadline an unfinished GPU push keeps its pages quarantined. */
  pushLeaseGraceMs?: number;
  /** [defaultTtlMs=30000] ttl of prep_recv reservations and deadline of remote_send. */
  defaultTtlMs?: number;
  /**
   * [tokenizer] the model's tokenizer, whose vocabulary structured outputs (`sampling.grammar`)
   * compile against (in a worker thread, on the first such request); without it such requests
   * are refused (BAD_REQUEST).
   */
  tokenizer?: TokenizerSource;
  /** [grammarCacheSize=64] compiled grammars an engine keeps per grammar worker (LRU by spec text). */
  grammarCacheSize?: number;
  /**
   * [grammarWorkers=min(4, floor(cores / 2)), at least 1] grammar worker threads: each request's
   * matcher lives in one (the least loaded when it opens), and a step's masks are computed in
   * all of them at once, while its forward runs.
   */
  grammarWorkers?: number;
  /** [loopMonitor] the event-loop monitor of the engine's process: `status` shows its stats as `eventLoop`. */
  loopMonitor?: LoopMonitor;
}

export const DEFAULT_MAX_NUM_SEQS = 256;

export function newCounters(): EngineCounters {
  return {
    requests: 0,
    tokensPrefilled: 0,
    tokensGenerated: 0,
    tokensReceived: 0,
    tokensSent: 0,
    bytesSent: 0,
    bytesReceived: 0,
    prefixHitTokens: 0,
    transfers: {},
    layerPush: { forwards: 0, computeMs: 0, exposedMs: 0 },
    preemptions: 0,
    tokensRecomputed: 0,
    stepFailures: 0,
    stepRetries: 0,
    requestsFailedByStep: 0,
    aborts: 0,
  };
}
