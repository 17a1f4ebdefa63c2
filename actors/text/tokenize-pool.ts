/**
 * Tokenizing off the event loop: a small pool of worker threads, each with its own copy of the
 * model's tokenizer (tokenize-worker.ts). The router sends large texts here so that a megabyte
 * prompt does not stall other requests (or `/health`) while it is tokenized; short ones are
 * cheaper inline ({@link shouldOffload}).
 *
 * Workers start on first use. A worker that dies fails its pending calls with NATIVE_ERROR and
 * is replaced on the next call. Errors from the tokenizer come back with their code.
 */
import { Worker } from 'node:worker_threads';
import { MicroserveError, type ErrorCode } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import type { ChatMessage, ChatTemplateOptions, TokenizerSource } from './tokenizer.ts';

export type PoolRequest =
  | { id: number; op: 'encode'; text: string; addBos: boolean }
  | { id: number; op: 'chat'; messages: ChatMessage[]; opts: ChatTemplateOptions };
export type PoolReply = { id: number; ids?: Int32Array; error?: { code: string; message: string }; ready?: boolean };

/** [OFFLOAD_CHARS=32768] texts at least this long are tokenized in the pool. */
export const OFFLOAD_CHARS = 32_768;

export function shouldOffload(numChars: number): boolean {
  return numChars >= OFFLOAD_CHARS;
}

interface Slot {
  worker: Worker;
  pending: Map<number, { resolve: (ids: Int32Array) => void; reject: (e: Error) => void }>;
}

export class TokenizePool {
  private readonly slots: (Slot | null)[];
  private nextId = 1;
  private isClosed = false;

  /** [size=1] worker threads. */
  constructor(
    private readonly source: TokenizerSource,
    size = 1,
  ) {
    this.slots = new Array(Math.max(1, size)).fill(null);
  }

  encode(text: string, addBos: boolean): Promise<Int32Array> {
    return this.call({ id: this.nextId++, op: 'encode', text, addBos });
  }

  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions): Promise<Int32Array> {
    return this.call({ id: this.nextId++, op: 'chat', messages, opts });
  }

  /** Stops the workers; pending calls fail. Idempotent. */
  async close(): Promise<void> {
    this.isClosed = true;
    await Promise.all(this.slots.map((s) => s?.worker.terminate()));
    this.slots.fill(null);
  }

  private call(req: PoolRequest): Promise<Int32Array> {
    if (this.isClosed) return Promise.reject(new MicroserveError('NATIVE_ERROR', 'the tokenizer pool is closed'));
    const slot = this.pick();
    return new Promise((resolve, reject) => {
      slot.pending.set(req.id, { resolve, reject });
      slot.worker.postMessage(req);
    });
  }

  /** The live worker with the fewest pending calls (started if needed). */
  private pick(): Slot {
    let best = -1;
    for (let i = 0; i < this.slots.length; i++) {
      if (!this.slots[i]) this.slots[i] = this.start(i);
      if (best < 0 || this.slots[i]!.pending.size < this.slots[best]!.pending.size) best = i;
    }
    return this.slots[best]!;
  }

  private start(i: number): Slot {
    const worker = new Worker(new URL('./tokenize-worker.mjs', import.meta.url), { workerData: { source: this.source } });
    const slot: Slot = { worker, pending: new Map() };
    worker.unref();
    worker.on('message', (m: PoolReply) => {
      const p = slot.pending.get(m.id);
      if (!p) return;
      slot.pending.delete(m.id);
      if (m.error) p.reject(new MicroserveError(m.error.code as ErrorCode, m.error.message));
      else p.resolve(m.ids!);
    });
    const fail = (why: string) => {
      if (this.slots[i] === slot) this.slots[i] = null;
      for (const p of slot.pending.values()) p.reject(new MicroserveError('NATIVE_ERROR', `tokenizer worker ${why}`));
      slot.pending.clear();
    };
    worker.on('error', (e) => {
      log.warn('tokenizer worker failed', { err: e });
      fail(`failed: ${e.message}`);
    });
    worker.on('exit', (code) => fail(`exited (${code})`));
    return slot;
  }
}
