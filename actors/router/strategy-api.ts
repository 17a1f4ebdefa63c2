/**
 * The strategy API: how a serving strategy composes the engines' sub-request operations.
 *
 * A strategy is an ES module whose default export is an async function
 * `(ctx: StrategyContext, req: RoutedRequest) => Promise<void>`. The router calls it once per
 * request attempt; it must end by starting generation on exactly one engine with
 * `ctx.startGenerate` (directly, or after `prepRecv` + `remoteSend` to move KV first). When it
 * returns, the router follows the token stream; it never calls the strategy for the tokens.
 * The module may also export `validateParams(params)`, called when the module is loaded (at
 * start and on every plan change) so a bad parameter fails the plan, not a request.
 *
 * ```ts
 * // my-strategy.ts (router.strategy: ./my-strategy.ts): everything to the least-loaded engine
 * import type { StrategyContext, RoutedRequest } from '<microserve>/actors/router/strategy-api.ts';
 * export default async function (ctx: StrategyContext, req: RoutedRequest) {
 *   const [e] = ctx.engines().sort((a, b) => ctx.load(a) - ctx.load(b));
 *   await ctx.startGenerate(e, req.promptIds, 0);
 * }
 * ```
 *
 * Contracts the ctx keeps for the strategy (so strategies stay short):
 * - the request id that ties prep_recv / remote_send / start_generate together is the
 *   attempt's; every engine an operation touches is remembered, and aborted when the client
 *   goes away or the attempt is given up;
 * - operations reject with a MicroserveError: KV_PAGES_EXHAUSTED (prep_recv), TRANSFER_FAILED /
 *   TRANSFER_TIMEOUT (remote_send), and for a dead or silent engine CONNECTION_LOST /
 *   ACTOR_STOPPED / ACTOR_NOT_FOUND / QUERY_TIMEOUT (see `isEngineFailure`). A strategy may catch
 *   them and fall back; whatever it lets through fails the attempt, and the router retries the
 *   request (another attempt, a new id) when the error was an engine failure or a hand-over that
 *   did not complete (TRANSFER_FAILED, TRANSFER_TIMEOUT, RESERVATION_EXPIRED, UNKNOWN_REQUEST);
 * - `load` counts this router's requests on the engine live, plus what the engine's last status
 *   reported beyond them, so two requests decided in the same tick see each other.
 */
import type { KvAddr, KvPageStats, PrepRecvResult, RemoteSendResult, Role, SamplingParams } from '../messages.ts';

export interface RoutedRequest {
  /** Id of this attempt (a retried request gets a new one). */
  readonly id: string;
  /**
   * The tokens to continue from: the prompt, plus the tokens already streamed to the client
   * when this attempt resumes a request whose engine failed.
   */
  readonly promptIds: readonly number[];
  /** Length of the client's prompt (`promptIds.length - numGenerated`). */
  readonly numPromptTokens: number;
  /** Tokens already streamed by earlier attempts (0 on the first). */
  readonly numGenerated: number;
  /** 1 for the first attempt. */
  readonly attempt: number;
  /** Sampling for this attempt (`maxTokens` already reduced by `numGenerated`). */
  readonly sampling: Readonly<SamplingParams>;
}

export interface StrategyContext {
  /** The plan's strategy parameters (e.g. `{ ratio: 0.2 }`), as given. */
  readonly params: Readonly<Record<string, unknown>>;
  /**
   * Names of the plan's live engines, in plan order. With a role: engines of that role plus
   * those with role 'both'. Engines that failed during this request are left out.
   */
  engines(role?: Role): string[];
  /** The plan role of an engine. */
  role(engine: string): Role;
  /** Requests running + waiting on the engine (see the module comment). */
  load(engine: string): number;
  /** KV page accounting from the engine's last status, or null before the first. */
  kv(engine: string): KvPageStats | null;
  /** How many leading tokens of `ids` the engine holds in its prefix cache; 0 when it cannot say. */
  matchPrefix(engine: string, ids: readonly number[]): Promise<number>;
  /** prep_recv: reserve KV slots for `[matched, end)` on a receiving engine. */
  prepRecv(engine: string, ids: readonly number[], end: number): Promise<PrepRecvResult>;
  /** remote_send: the sender computes KV for `[0, end)` it lacks and writes `[begin, end)` to `kvAddr`. */
  remoteSend(engine: string, ids: readonly number[], begin: number, end: number, kvAddr: KvAddr): Promise<RemoteSendResult>;
  /**
   * start_generate: prefill `[begin, len)` locally and stream tokens. Resolves once the engine
   * admitted the request; the attempt then belongs to that engine.
   */
  startGenerate(engine: string, ids: readonly number[], begin: number): Promise<void>;
  /** Aborts this attempt on one engine (frees its reservation and pages). Never rejects. */
  abort(engine: string): Promise<void>;
  /** Debug log line tagged with the request id. */
  debug(msg: string, fields?: Record<string, unknown>): void;
}

export type Strategy = (ctx: StrategyContext, req: RoutedRequest) => Promise<void>;

/** What a strategy module exports. */
export interface StrategyModule {
  default: Strategy;
  /** Throws (ideally a MicroserveError BAD_CONFIG naming the parameter) when params are invalid. */
  validateParams?: (params: Record<string, unknown>) => void;
}
