/**
 * The runtime's public contract. A local and a remote actor look the same to callers.
 *
 * - `dispatch` is fire-and-forget: to a stopped or unknown actor it is a no-op (logged).
 * - `query` always takes a timeout (ms) and rejects with a MicroserveError:
 *   QUERY_TIMEOUT, ACTOR_NOT_FOUND, ACTOR_STOPPED, ACTOR_CRASHED, CONNECTION_LOST, or the typed
 *   error the handler threw. Pending queries on a lost connection fail at once.
 */
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
  /** [onCrash=() => 'resume'] decides after a crash; must not throw. */
  onCrash?: (err: unknown, msg: unknown) => CrashDecision;
  /** [reset] called to rebuild the handler on a 'reset' decision. */
  reset?: () => Handler;
}

export interface ActorSystemApi {
  readonly nodeId: string;
  /** ws URL of this node's server, or null for a client-only node. */
  readonly url: string | null;
  spawn(path: string, handler: Handler, opts?: SpawnOptions): ActorRef;
  stop(path: string): void;
  ref(path: string): ActorRef;
  /** Paths known cluster-wide (local and remote), with the node that hosts each. */
  listActors(): { path: string; nodeId: string }[];
  /** Calls fn when the node hosting `path` goes away (connection lost, heartbeat missed, stopped). */
  onActorGone(fn: (path: string, nodeId: string) => void): () => void;
  close(): Promise<void>;
}
