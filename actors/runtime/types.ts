/**
 * The runtime's public contract. A local and a remote actor look the same to callers.
 *
 * - `dispatch` is fire-and-forget: to a stopped or unknown actor it is a no-op (logged).
 * - `query` always takes a timeout (ms) and rejects with a MicroserveError:
 *   QUERY_TIMEOUT, ACTOR_NOT_FOUND, ACTOR_STOPPED, ACTOR_CRASHED, CONNECTION_LOST, or the typed
 *   error the handler threw. Pending queries on a lost connection fail at once.
 */
import type { RestartPolicy } from './restart-policy.ts';

export interface ActorRef {
  readonly path: string;
  dispatch(msg: object): void;
  query<R = unknown>(msg: object, timeoutMs: number): Promise<R>;
}

export interface ActorContext {
  /** This actor's path, e.g. `engine/p0`. */
  readonly self: string;
  /** Path of the sender when known (a node path `node/<id>` for queries from scripts). */
  readonly from?: string;
  readonly system: ActorSystemApi;
}

/**
 * A message handler. Messages are handed over one at a time in mailbox order. The return value
 * (or what the returned promise resolves to) is the reply when the message came as a query.
 * The mailbox does not wait for a returned promise: long operations (a remote_send, a prefill)
 * must not keep an engine from answering `status`.
 * Throwing a MicroserveError replies with that typed error; throwing anything else is a crash:
 * the query fails with ACTOR_CRASHED and the actor's supervision policy decides what happens.
 */
export type Handler = (msg: any, ctx: ActorContext) => unknown | Promise<unknown>;

/** What a supervisor decides for a crashed actor (nact semantics). */
export type CrashDecision = 'resume' | 'reset' | 'stop';

export interface SpawnOptions {
  /**
   * [onCrash=() => 'resume'] decides after a crash; must not throw. 'stop' hands the actor to
   * supervision: it is restarted under the restart policy, like a killed actor.
   */
  onCrash?: (err: unknown, msg: unknown) => CrashDecision;
  /** [reset] called to rebuild the handler on a 'reset' decision. */
  reset?: () => Handler;
  /** [restartPolicy=DEFAULT_RESTART_POLICY] backoff and give-up of this actor's restarts. */
  restartPolicy?: Partial<RestartPolicy>;
}

/** Supervision state of one actor (runtime/local-actors.ts). */
export interface ActorSupervision {
  path: string;
  /** running; restarting (down, messages queued); failed (gave up, see `failed`). */
  state: 'running' | 'restarting' | 'failed';
  /** Times it was brought back (after a kill, a 'stop' decision, or `restart`). */
  restarts: number;
  /** Why it last went down, and when. */
  lastExit?: { reason: string; at: string };
  /** Why supervision gave up, while `failed`. */
  failed?: string;
}

export interface ActorSystemApi {
  readonly nodeId: string;
  /** ws URL of this node's server, or null for a client-only node. */
  readonly url: string | null;
  spawn(path: string, handler: Handler, opts?: SpawnOptions): ActorRef;
  /** Stops a local actor for good (its owner's shutdown). */
  stop(path: string): void;
  /** Stops a local actor as a crash would: supervision restarts it. False if not hosted here. */
  kill(path: string, why?: string): boolean;
  /** Brings a local actor back now with a fresh crash window (after `failed`). False if not hosted here. */
  restart(path: string): boolean;
  /** Supervision state of the actors hosted on this node. */
  supervision(): ActorSupervision[];
  ref(path: string): ActorRef;
  /** Paths known cluster-wide (local and remote), with the node that hosts each. */
  listActors(): { path: string; nodeId: string }[];
  /** Calls fn when the node hosting `path` goes away (connection lost, heartbeat missed, stopped). */
  onActorGone(fn: (path: string, nodeId: string) => void): () => void;
  close(): Promise<void>;
}
