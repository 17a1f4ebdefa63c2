/**
 * The router's public types: options of `startRouter`, the `Router` handle, plans and status.
 */
import type { LoopMonitor } from '../../common/loop-monitor.ts';
import type { EngineStatus, Role } from '../messages.ts';
import type { Tokenizer } from '../text/tokenizer.ts';

export interface PlanEngine {
  name: string;
  role: Role;
}

/** What the router routes with: the engines, the strategy and its parameters. */
export interface Plan {
  engines: PlanEngine[];
  /** Built-in name (dp, dp-prefix, pd, balanced-pd, migrate) or a strategy module path. */
  strategy: string;
  /** Strategy parameters, e.g. `{ ratio: 0.2 }` for balanced-pd (`{}` for none). */
  params: Record<string, unknown>;
}

export interface RouterOptions extends Omit<Plan, 'params'> {
  /** [params={}] strategy parameters of the initial plan. */
  params?: Record<string, unknown>;
  /** [host='127.0.0.1'] HTTP bind address. */
  host?: string;
  /** [port=8000] HTTP port; 0 picks a free one (see `Router.url`). */
  port?: number;
  /** Served model id (what `/v1/models` lists and requests name). */
  modelName: string;
  /** The model's tokenizer, or null: then prompts must be token ids and outputs carry ids. */
  tokenizer: Tokenizer | null;
  /** Context length of the model: prompt + max tokens must fit. */
  contextLength: number;
  /** [vocabSize=tokenizer's] prompt ids must be below it when known. */
  vocabSize?: number;
  /** [eosTokenIds=tokenizer's, else []] ids that end generation unless `ignore_eos`. */
  eosTokenIds?: number[];
  /** [apiKey] when set, /v1 requests need `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /**
   * [requestTimeoutMs=60000] an engine that streams no token for this long is treated as failed
   * (the request moves on); also how long a request waits for an engine when none is up.
   */
  requestTimeoutMs?: number;
  /** [opTimeoutMs=10000] timeout of prep_recv, start_generate admission and status queries. */
  opTimeoutMs?: number;
  /** [transferTtlMs=30000] ttl of prep_recv reservations and remote_send deadlines. */
  transferTtlMs?: number;
  /** [statusIntervalMs=500] how often engines' status is polled (load, health, gauges). */
  statusIntervalMs?: number;
  /** [maxBodyBytes=4194304] larger request bodies get 413. */
  maxBodyBytes?: number;
  /** [maxAttempts=8] attempts per request (first run + migrations and retries). */
  maxAttempts?: number;
  /** [loopMonitor] the event-loop monitor of this process: `/metrics` shows its delays (`microserve_event_loop_*`). */
  loopMonitor?: LoopMonitor;
  /** [baseDir=process.cwd()] where relative strategy module paths are resolved. */
  baseDir?: string;
  /** [defaultMaxTokens] default when a request gives none: 16 for completions, the remaining context (and KV room) for chat. */
  defaultMaxTokens?: number;
  /**
   * [maxQueue=null] unlimited when null. With a number, a request arriving while that many are
   * waiting for their first token gets HTTP 429 with Retry-After (before any token).
   */
  maxQueue?: number | null;
}

export interface PlanApplied {
  version: number;
  strategy: string;
  /** From the call to the new plan being in force (strategy loaded, roles sent). */
  switchMs: number;
  /** Requests still running under the previous plan; they finish under it. */
  inFlightOnOldPlan: number;
}

export interface EngineView {
  name: string;
  role: Role;
  isAlive: boolean;
  /** Router's live requests on it + status-reported work beyond them. */
  load: number;
  restarts: number;
  status: EngineStatus | null;
}

export interface RouterStatus {
  url: string;
  model: string;
  planVersion: number;
  strategy: string;
  params: Record<string, unknown>;
  engines: EngineView[];
  requestsInFlight: number;
  /** Requests waiting for an engine of their plan to come up. */
  requestsWaiting: number;
  /** Requests in flight without a first token (bounded by maxQueue). */
  requestsQueued: number;
  maxQueue: number | null;
  lastPlanChange: null | { version: number; switchMs: number; drainMs: number | null };
  counters: { requests: number; migrations: number; errors: number; busyRetries: number; tokensDiscarded: number };
}

export interface Router {
  /** `http://host:port` the HTTP API listens on. */
  readonly url: string;
  /**
   * Applies a new plan in place (hot reload): loads the strategy (failing: the old plan stays),
   * sends `set_role` to engines whose role changed, then routes new requests with it.
   * In-flight requests finish under the plan they started with.
   */
  setPlan(plan: Plan): Promise<PlanApplied>;
  /** Resolves once every engine of the plan answered status; rejects with NO_ENGINE after timeoutMs. */
  ready(timeoutMs?: number): Promise<void>;
  status(): RouterStatus;
  /** Stops the HTTP server, aborts in-flight requests on their engines, stops the router actor. */
  close(): Promise<void>;
}
