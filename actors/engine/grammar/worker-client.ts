/**
 * The main-thread side of a grammar worker (grammar-worker.ts): calls as promises, answered in
 * order. The worker starts on first use. A call that takes longer than `timeoutMs` (a pathological
 * grammar) terminates the worker: its calls fail with BAD_GRAMMAR, and the next call starts a
 * fresh worker (an engine's requests whose matchers lived there then fail on their next token).
 */
import { Worker } from 'node:worker_threads';
import { MicroserveError, type ErrorCode, type WireError } from '../../../common/errors.ts';
import { log } from '../../../common/log.ts';
import type { GrammarSpec } from '../../messages.ts';
import type { AcceptItem, FillItem, GrammarCall, GrammarReply, GrammarStep, GrammarWorkerInit } from './protocol.ts';

export interface GrammarWorkerOptions {
  /** [timeoutMs=60000] longest a call may take (a compile, or an advance queued behind one). */
  timeoutMs?: number;
}

interface Pending {
  resolve: (r: GrammarReply) => void;
  /** The call's partial reply (acceptAndFill). */
  onPartial?: (r: GrammarReply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

type CallBody = GrammarCall extends infer C ? (C extends GrammarCall ? Omit<C, 'seq'> : never) : never;

const fromWire = (w: WireError, info?: Record<string, unknown>) => new MicroserveError(w.code as ErrorCode, w.message, info);

export class GrammarWorkerClient {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextSeq = 1;
  private isClosed = false;
  private readonly timeoutMs: number;

  constructor(
    private readonly init: GrammarWorkerInit,
    o: GrammarWorkerOptions = {},
  ) {
    this.timeoutMs = o.timeoutMs ?? 60_000;
  }

  /** Resolves when xgrammar accepts `spec`; BAD_GRAMMAR naming `field` otherwise. */
  async check(spec: GrammarSpec, field: string): Promise<void> {
    await this.call({ op: 'check', spec, field }, field);
  }

  /** A new matcher `handle` for `spec`, with `replay` accepted: its first mask. */
  async open(handle: number, spec: GrammarSpec, field: string, replay: number[]): Promise<GrammarStep> {
    const r = await this.call({ op: 'open', handle, spec, field, replay }, field);
    return r.steps![0];
  }

  /** Feeds each handle its sampled token (no mask computed): completion and errors, in the same order. */
  async accept(items: AcceptItem[]): Promise<GrammarStep[]> {
    return (await this.call({ op: 'accept', items }, 'sampling.grammar')).steps!;
  }

  /** Writes each handle's next mask into its row of `target` ((rows, words) uint32): completion and errors, in the same order. */
  async fill(items: FillItem[], target: SharedArrayBuffer, words: number): Promise<GrammarStep[]> {
    return (await this.call({ op: 'fill', items, target, words }, 'sampling.grammar')).steps!;
  }

  /**
   * `accept(accepts)` then `fill(items, ...)` in one call: the accepts' steps go to `onAccepted` as
   * soon as the worker has them (synchronously, in the message's event, before the masks are
   * computed); resolves with the fill's steps. A call that fails before that never calls it.
   */
  async acceptAndFill(accepts: AcceptItem[], items: FillItem[], target: SharedArrayBuffer, words: number, onAccepted: (steps: GrammarStep[]) => void): Promise<GrammarStep[]> {
    return (await this.call({ op: 'fill', items, target, words, accepts }, 'sampling.grammar', (r) => onAccepted(r.accepted!))).steps!;
  }

  /** Frees matchers (no answer awaited). */
  close(handles: number[]): void {
    if (!this.worker || handles.length === 0) return;
    this.call({ op: 'close', handles }, 'sampling.grammar').catch(() => {});
  }

  /** Stops the worker; pending calls fail. */
  async shutdown(): Promise<void> {
    this.isClosed = true;
    const w = this.worker;
    this.fail(new MicroserveError('ACTOR_STOPPED', 'the grammar worker was stopped'));
    await w?.terminate();
  }

  private call(body: CallBody, field: string, onPartial?: (r: GrammarReply) => void): Promise<GrammarReply> {
    if (this.isClosed) return Promise.reject(new MicroserveError('ACTOR_STOPPED', 'the grammar worker was stopped'));
    const w = this.ensure();
    const seq = this.nextSeq++;
    return new Promise<GrammarReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        log.warn('grammar worker call timed out: restarting the worker', { op: body.op, timeoutMs: this.timeoutMs });
        this.fail(new MicroserveError('BAD_GRAMMAR', `${field}: the grammar took longer than ${this.timeoutMs} ms to build`, { field, param: field }));
        void w.terminate();
      }, this.timeoutMs);
      this.pending.set(seq, { resolve, reject, timer, onPartial });
      w.postMessage({ ...body, seq } as GrammarCall);
    }).then((r) => {
      if (r.error) throw fromWire(r.error, { field, param: field });
      return r;
    });
  }

  private ensure(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL('./grammar-worker.mjs', import.meta.url), { workerData: this.init });
    w.unref();
    w.on('message', (r: GrammarReply) => {
      const p = this.pending.get(r.seq);
      if (!p) return;
      if (r.isPartial) {
        try {
          p.onPartial?.(r);
        } catch (e) {
          log.error('a grammar call\'s partial reply handler threw', { err: e as Error });
        }
        return;
      }
      this.pending.delete(r.seq);
      clearTimeout(p.timer);
      p.resolve(r);
    });
    const gone = (why: string) => {
      if (this.worker !== w) return;
      this.worker = null;
      this.fail(new MicroserveError('BAD_GRAMMAR', `the grammar worker stopped: ${why}`));
    };
    w.on('error', (e) => gone(e.message));
    w.on('exit', (code) => gone(`exit ${code}`));
    this.worker = w;
    return w;
  }

  private fail(err: MicroserveError): void {
    this.worker = null;
    for (const p of this.pending.values()) clearTimeout(p.timer), p.reject(err);
    this.pending.clear();
  }
}
