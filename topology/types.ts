/**
 * The topology: what runs where. Parsed and validated by topology/load.ts; the YAML layout is
 * documented in topology/README.md and the examples beside it.
 */
import type { Role } from '../actors/messages.ts';
import type { TransportName } from '../common/transport.ts';

export interface EngineSpec {
  /** Unique; the actor paths are `engine/<name>` and `kv/<name>`. */
  name: string;
  role: Role;
  /** 'cpu' or 'cuda:N'. */
  device: string;
  /** [host='local'] which host's node supervisor runs it. */
  host: string;
  /**
   * [kvPages='auto' on a GPU, 512 on CPU] KV pool size in pages. 'auto' on a GPU: what
   * gpuMemoryUtilization leaves after weights, the step arena and CUDA graphs; on CPU: 512.
   */
  kvPages: number | 'auto';
  /** [pageSize=16] tokens per page. */
  pageSize: number;
  /** [maxBatchTokens=1024 on a GPU, 512 on CPU] scheduler budget per step (prefill chunk size); the memory plan holds a step of this many tokens. */
  maxBatchTokens: number;
  /** [maxNumSeqs=256] sequences per step (scheduler cap and memory plan). */
  maxNumSeqs: number;
  /** [gpuMemoryUtilization=0.9] share of the GPU's total memory this engine may use (sizes kvPages 'auto'). */
  gpuMemoryUtilization: number;
  /** [threads=0] CPU threads for a cpu engine, 0 = all cores. */
  threads: number;
  /** [grammarWorkers=min(4, floor(cores / 2)), at least 1] structured outputs' grammar worker threads. */
  grammarWorkers?: number;
}

export interface RouterSpec {
  /** [host='127.0.0.1'] HTTP bind address. */
  host: string;
  /** [port=8000] HTTP port. */
  port: number;
  /** [strategy='dp'] built-in name (dp, dp-prefix, pd, balanced-pd, migrate) or a module path. */
  strategy: string;
  /** Strategy parameters, e.g. { ratio: 0.1 } for balanced-pd. */
  params: Record<string, unknown>;
  /** [apiKey] when set, HTTP requests need `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /**
   * [maxQueue] unlimited when absent. Requests arriving while this many wait for their first
   * token get HTTP 429 with Retry-After; nothing is refused for load after its first token.
   */
  maxQueue?: number;
}

export interface ControlSpec {
  /** [host='127.0.0.1'] control-plane ws bind address (loopback unless told otherwise). */
  host: string;
  /** [port=7700] control-plane ws port; 0 picks a free one. */
  port: number;
  /** [maxFrameBytes=67108864] frames above this close the connection (1009). */
  maxFrameBytes: number;
}

export interface HostSpec {
  name: string;
}

export interface Topology {
  /** Required: preset name (tiny, llama-3.1-8b) or a Hugging Face checkpoint folder. */
  model: string;
  transport: TransportName;
  control: ControlSpec;
  router: RouterSpec;
  hosts: HostSpec[];
  engines: EngineSpec[];
  /** Absolute path of the file it came from, when it came from a file. */
  source?: string;
}
