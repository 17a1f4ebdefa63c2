/**
 * Typed errors. Every error that crosses a process boundary or reaches a user carries a stable
 * `code`; on the wire it travels as `{ code, message }` (see `toWire` / `fromWire`).
 */

/** Stable error codes. Add new ones here, never reuse a code for another meaning. */
export type ErrorCode =
  // runtime
  | 'QUERY_TIMEOUT' // a query got no reply within its timeout
  | 'ACTOR_NOT_FOUND' // no actor is registered under that path
  | 'ACTOR_STOPPED' // the actor was stopped or its process died
  | 'ACTOR_CRASHED' // the handler threw an unexpected error while answering this message
  | 'CONNECTION_LOST' // the ws connection carrying the query closed or its peer stopped answering
  | 'UNAUTHORIZED' // wrong or missing cluster token
  | 'BAD_FRAME' // a frame that is not a valid msgpack envelope
  | 'FRAME_TOO_LARGE' // a frame over the configured cap
  | 'BAD_MESSAGE' // a well-formed envelope whose body is not a valid message for that actor
  | 'GAVE_UP' // a supervisor stopped restarting a process after too many crashes
  | 'CLUSTER_RUNNING' // `up` on a MICROSERVE_HOME whose cluster is alive
  // engine and KV
  | 'KV_PAGES_EXHAUSTED' // admission control: not enough free or evictable pages
  | 'RESERVATION_EXPIRED' // a prep_recv reservation passed its deadline
  | 'UNKNOWN_REQUEST' // no request with that id on this engine
  | 'DUPLICATE_REQUEST' // a request with that id already exists on this engine
  | 'TRANSFER_FAILED' // a KV transfer failed (peer gone, transport error)
  | 'TRANSFER_TIMEOUT' // a KV transfer passed its deadline
  | 'TRANSFER_IN_PROGRESS' // pages still being written by a sender's push (start_generate too early)
  | 'ABORTED' // the request was aborted
  | 'PROMPT_TOO_LONG' // prompt (+ max tokens) exceeds the context or the KV pool
  | 'BAD_TOKEN' // a token id outside the vocabulary
  | 'NO_TOKENIZER' // text given to a model that has no tokenizer
  | 'STEP_FAILED' // a forward step failed (its retry split in two too): only that step's requests end
  | 'BAD_GRAMMAR' // a structured-output schema, regex or grammar the grammar engine refuses
  // model loading and native
  | 'BAD_CHECKPOINT' // missing tensor, wrong shape, unknown dtype, truncated file
  | 'BAD_CONFIG' // bad config.json or bad option
  | 'NATIVE_ERROR' // the native backend reported a failure
  | 'NO_DEVICE' // the requested device does not exist
  | 'OVER_PLAN' // a step larger than the engine's memory plan (maxBatchTokens, maxNumSeqs, context)
  | 'DEVICE_MEMORY' // the memory plan (weights + step arena + KV pages) does not fit the device
  // topology and router
  | 'TOPOLOGY_INVALID'
  | 'NO_ENGINE' // no engine is available for the request
  | 'OVERLOADED' // the router's queue is full (router.maxQueue), or no engine could take the request for too long: HTTP 429
  | 'BAD_REQUEST';

export interface WireError {
  code: string;
  message: string;
}

export class MicroserveError extends Error {
  readonly code: ErrorCode;
  /**
   * Extra machine-readable context (field name, line, path...). Not called `details`: uvu's
   * reporter treats an error's `details` as its diff text and loses the failure message.
   */
  readonly info?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'MicroserveError';
    this.code = code;
    this.info = details;
  }

  toWire(): WireError {
    return { code: this.code, message: this.message };
  }

  static fromWire(w: WireError): MicroserveError {
    return new MicroserveError(w.code as ErrorCode, w.message);
  }
}

export function isMicroserveError(e: unknown, code?: ErrorCode): e is MicroserveError {
  return e instanceof MicroserveError && (code === undefined || e.code === code);
}
