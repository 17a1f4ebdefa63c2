/**
 * Queries this node is waiting on. Each has a timer (QUERY_TIMEOUT) and, once routed, the node
 * hosting its target, the node of the connection it left on and that connection: when either node
 * goes away, or that connection closes (its reply would come back on it), the query fails at once
 * with CONNECTION_LOST instead of waiting for its timeout.
 */
import { MicroserveError, type WireError } from '../../common/errors.ts';

export interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: MicroserveError) => void;
  timer: NodeJS.Timeout;
  path: string;
  /** Node hosting the target (when known) and node of the connection it went out on. */
  target: string | null;
  via: string | null;
  /** The connection it went out on (the reply comes back on it). */
  conn: object | null;
}

export class PendingQueries {
  private readonly byId = new Map<number, Pending>();
  private nextId = 1;

  /** Registers a query to `path`; returns its id and the promise its reply settles. */
  create<R>(path: string, timeoutMs: number): { id: number; promise: Promise<R> } {
    const id = this.nextId++;
    const promise = new Promise<R>((resolve, reject) => {
      const timer = setTimeout(
        () => this.fail(id, new MicroserveError('QUERY_TIMEOUT', `query to '${path}' timed out after ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.byId.set(id, { resolve: resolve as (v: unknown) => void, reject, timer, path, target: null, via: null, conn: null });
    });
    return { id, promise };
  }

  get(id: number): Pending | undefined {
    return this.byId.get(id);
  }

  has(id: number): boolean {
    return this.byId.has(id);
  }

  settle(id: number, body: unknown, error?: WireError): void {
    const p = this.byId.get(id);
    if (!p) return;
    this.byId.delete(id);
    clearTimeout(p.timer);
    if (error) p.reject(MicroserveError.fromWire(error));
    else p.resolve(body);
  }

  fail(id: number, err: MicroserveError): void {
    this.settle(id, undefined, err.toWire());
  }

  failWhere(pred: (p: Pending) => boolean, err: MicroserveError): void {
    for (const [id, p] of this.byId) if (pred(p)) this.fail(id, err);
  }

  failAll(err: MicroserveError): void {
    this.failWhere(() => true, err);
  }
}
