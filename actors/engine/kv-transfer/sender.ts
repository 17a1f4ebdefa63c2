/**
 * The sender of KV transfers (docs/ARCHITECTURE.md, request lifecycle step 4), owned by the
 * engine core the way its scheduler is. `remote_send` runs in three stages:
 *
 * 1. plan: validate, fix the page range — the pages overlapping [max(begin, kvAddr.matchedLen),
 *    end) go into the receiver's pages with the same indexes (the last partial page goes whole;
 *    pages the receiver already has cached are never sent) — pick the transport, and for a GPU
 *    push transport (cuda-ipc, nvshmem) lease the receiver's pages (falling back to `host` when
 *    the push cannot be set up).
 * 2. compute: a `send` request computes what this engine's cache lacks of [0, end). Over a push
 *    transport each forward writes the pages it computes layer by layer (`forward`, called by
 *    the step runner for every step).
 * 3. deliver: push — pages served from this engine's prefix cache go whole, then `kv_push_end`;
 *    host — page bytes read and written in chunks.
 * The deadline covers all three; a failure is TRANSFER_FAILED / TRANSFER_TIMEOUT, typed.
 */
import type { Backend, ForwardBatch, ForwardSampling, LayerSendSpec } from '../../../native/backend.ts';
import { MicroserveError } from '../../../common/errors.ts';
import { log } from '../../../common/log.ts';
import type { EngineCounters, KvAddr, RemoteSendMsg, RemoteSendResult } from '../../messages.ts';
import { Request, requestKey, type PushPlan } from '../request.ts';
import type { StepEntry } from '../scheduler.ts';
import { checkFits, checkId, checkInt, checkTokens, type Capacity } from '../validate.ts';
import { checkKvAddr } from './checks.ts';
import { DEFAULT_TTL_MS } from './receiver.ts';
import { transferError, type KvTransport, type TransportPicker } from './transport.ts';

/** What the sender asks of its engine. */
export interface SenderHooks {
  /** Whether a request with this key lives on the engine. */
  hasRequest(key: string): boolean;
  /** Queues a send request; its `computed` settles when [0, end) is computed. */
  submit(req: Request): void;
  /** Stops a send (deadline): its compute ends, `stopped` rejects with `err`. */
  stop(req: Request, err: MicroserveError): void;
  /** Gives a finished send's pages back (into the prefix cache with `cache`) and forgets it. */
  finish(req: Request, cache: boolean): void;
  /** Resolves once `req` is not part of the forward in flight (its writes have landed). */
  afterStep(req: Request): Promise<void>;
}

export interface SenderOptions {
  name: string;
  pageSize: number;
  backend: Pick<Backend, 'pageBytes' | 'readPages' | 'forwardTokens' | 'kvIpc'>;
  vocabSize: number;
  capacity: Capacity;
  counters: EngineCounters;
  /** [pickTransport] transport to a receiver; without it remote_send fails with TRANSFER_FAILED. */
  pickTransport?: TransportPicker;
  /** [defaultTtlMs=DEFAULT_TTL_MS] deadline of a remote_send that sets no ttlMs. */
  defaultTtlMs?: number;
}

/** Stage 1's result: what goes where, by when, over which transport. */
interface SendPlan {
  id: string;
  promptIds: number[];
  kvAddr: KvAddr;
  end: number;
  ttlMs: number;
  deadline: number;
  /** First position sent, and the page range [first, last) it covers. */
  sendFrom: number;
  first: number;
  last: number;
  transport: KvTransport;
}

export class KvSender {
  constructor(
    private readonly o: SenderOptions,
    private readonly hooks: SenderHooks,
  ) {}

  async remoteSend(msg: Omit<RemoteSendMsg, 'type'>): Promise<RemoteSendResult> {
    const plan = this.plan(msg);
    const req = new Request({ id: plan.id, kind: 'send', promptIds: plan.promptIds.slice(0, plan.end) });
    await this.lease(plan, req);
    this.hooks.submit(req);
    const timer = setTimeout(() => this.hooks.stop(req, new MicroserveError('TRANSFER_TIMEOUT', `remote_send '${plan.id}' to ${plan.kvAddr.engine} passed its ${plan.ttlMs} ms deadline`)), plan.ttlMs);
    let copying: Promise<unknown> | null = null;
    let isLeased = !!req.push; // until the lease ends written; a failure ends it unwritten in `finally`
    try {
      await req.computed;
      let sentBytes: number;
      if (req.push) {
        copying = this.copyCached(plan, req, req.push);
        await Promise.race([copying, req.stopped]);
        isLeased = false;
        await Promise.race([plan.transport.push!.end(plan.id, true), req.stopped]);
        sentBytes = (plan.last - plan.first) * this.o.backend.pageBytes;
      } else {
        sentBytes = await this.writeChunks(plan, req);
      }
      return this.account(plan, req, sentBytes);
    } catch (e) {
      throw req.failure ?? e;
    } finally {
      clearTimeout(timer);
      const cache = !req.isAborted && req.state === 'computed';
      req.state = 'finished';
      if (isLeased) void this.endLeaseAfterWrites(req, plan.transport, copying);
      this.hooks.finish(req, cache);
    }
  }

  /**
   * One forward of a step. Send requests of the step that push write the pages it computes into
   * the receiver layer by layer: every page of [first, last) a chunk touches, whole per layer (a
   * page a later chunk completes is written again then), marked pushed once the forward succeeded.
   */
  async forward(entries: StepEntry[], batch: ForwardBatch & { sampling: ForwardSampling }): Promise<Int32Array> {
    const { send, pushed } = this.layerSend(entries);
    if (!send) return this.o.backend.forwardTokens(batch);
    const r = await this.o.backend.kvIpc!.forwardWithSend(batch, send);
    for (const [p, i] of pushed) p.pushed.add(i);
    const lp = (this.o.counters.layerPush ??= { forwards: 0, computeMs: 0, exposedMs: 0 });
    lp.forwards++;
    lp.computeMs += r.timeline.computeEnd;
    lp.exposedMs += Math.max(0, r.timeline.sendEnd - r.timeline.computeEnd);
    return r.tokens!;
  }

  /** The page pairs this step's push requests write, and which plan index each is (marked once the forward succeeded). */
  private layerSend(entries: StepEntry[]): { send: LayerSendSpec | null; pushed: [PushPlan, number][] } {
    const src: number[] = [];
    const dst: number[] = [];
    const peers: number[] = [];
    const pushed: [PushPlan, number][] = [];
    const ps = this.o.pageSize;
    for (const { req, start, n } of entries) {
      const p = req.push;
      if (!p || !req.seq) continue;
      const lo = Math.max(p.first, Math.floor(start / ps));
      const hi = Math.min(p.last, Math.ceil((start + n) / ps));
      for (let i = lo; i < hi; i++) {
        src.push(req.seq.pageIds[i]);
        dst.push(p.dstPageIds[i]);
        peers.push(p.peerId);
        pushed.push([p, i]);
      }
    }
    if (src.length === 0) return { send: null, pushed };
    return { send: { peerId: peers[0], srcPages: Int32Array.from(src), dstPages: Int32Array.from(dst), peerIds: Int32Array.from(peers) }, pushed };
  }

  /** Stage 1: checks, the page range, the deadline, the transport. */
  private plan(msg: Omit<RemoteSendMsg, 'type'>): SendPlan {
    const op = 'remote_send';
    const id = checkId(msg.id, op);
    const promptIds = checkTokens(msg.promptIds, this.o.vocabSize, op);
    const end = checkInt(msg.end, op, 'end', 1, promptIds.length);
    const begin = checkInt(msg.begin, op, 'begin', 0, end);
    const ps = this.o.pageSize;
    const kvAddr = checkKvAddr(msg.kvAddr, end, ps, op);
    const ttlMs = checkInt(msg.ttlMs ?? this.o.defaultTtlMs ?? DEFAULT_TTL_MS, op, 'ttlMs', 1);
    const deadline = Date.now() + ttlMs;
    if (this.hooks.hasRequest(requestKey('send', id))) throw new MicroserveError('DUPLICATE_REQUEST', `${op}: a send for '${id}' is already running on ${this.o.name}`);
    checkFits(end, 0, this.o.capacity, op);
    if (!this.o.pickTransport) throw new MicroserveError('TRANSFER_FAILED', `${op}: engine ${this.o.name} has no KV transport`);
    const transport = this.o.pickTransport(kvAddr);
    const sendFrom = Math.max(begin, kvAddr.matchedLen);
    return { id, promptIds, kvAddr, end, ttlMs, deadline, sendFrom, first: Math.floor(sendFrom / ps), last: Math.ceil(end / ps), transport };
  }

  /** Stage 1, push transports: open the receiver's pool and lease its pages before the compute starts. */
  private async lease(plan: SendPlan, req: Request): Promise<void> {
    const push = plan.transport.push;
    if (!push || plan.first >= plan.last) return;
    let peerId: number;
    try {
      peerId = await push.openPeer();
    } catch (e) {
      log.warn('KV push transport unavailable; falling back', { engine: this.o.name, id: plan.id, transport: plan.transport.name, error: (e as Error).message });
      plan.transport = plan.transport.fallback ?? plan.transport;
      if (plan.transport.push) throw transferError(e, plan.kvAddr.engine);
      return;
    }
    await push.begin(plan.id, plan.kvAddr.pageIds.slice(plan.first, plan.last), plan.deadline);
    req.push = { peerId, first: plan.first, last: plan.last, dstPageIds: plan.kvAddr.pageIds, pushed: new Set() };
  }

  /** Stage 3, push: the forwards wrote every page they computed; pages served from this engine's prefix cache go now, whole. */
  private async copyCached(plan: SendPlan, req: Request, p: PushPlan): Promise<unknown> {
    const rest: number[] = [];
    for (let i = plan.first; i < plan.last; i++) if (!p.pushed.has(i)) rest.push(i);
    if (rest.length === 0) return;
    return this.o.backend.kvIpc!.copyPages(p.peerId, Int32Array.from(rest, (i) => req.seq!.pageIds[i]), Int32Array.from(rest, (i) => p.dstPageIds[i]), true);
  }

  /** Stage 3, host: page bytes read and written in chunks of at most the transport's size. */
  private async writeChunks(plan: SendPlan, req: Request): Promise<number> {
    const { transport, first, last, kvAddr } = plan;
    const perChunk = Math.max(1, Math.floor(transport.maxChunkBytes / this.o.backend.pageBytes));
    let sentBytes = 0;
    for (let i = first; i < last; i += perChunk) {
      const j = Math.min(last, i + perChunk);
      const data = await Promise.race([this.o.backend.readPages(Int32Array.from(req.seq!.pageIds.slice(i, j))), req.stopped]);
      try {
        await Promise.race([transport.write(plan.id, kvAddr.pageIds.slice(i, j), data, plan.deadline), req.stopped]);
      } catch (e) {
        throw req.failure ?? transferError(e, kvAddr.engine);
      }
      sentBytes += data.length;
    }
    return sentBytes;
  }

  private account(plan: SendPlan, req: Request, sentBytes: number): RemoteSendResult {
    const c = this.o.counters;
    const sentTokens = plan.first < plan.last ? plan.end - plan.sendFrom : 0;
    c.tokensSent += sentTokens;
    c.bytesSent += sentBytes;
    c.transfers[plan.transport.name] = (c.transfers[plan.transport.name] ?? 0) + 1;
    return { computedTokens: req.numPrefilled, sentTokens, sentBytes, transport: plan.transport.name };
  }

  /** A failed push: once no write of ours can still land (step over, copy done), end the lease unwritten. */
  private async endLeaseAfterWrites(req: Request, transport: KvTransport, copying: Promise<unknown> | null): Promise<void> {
    await this.hooks.afterStep(req);
    await copying?.catch(() => {});
    await transport.push!.end(req.id, false).catch(() => {});
  }
}
