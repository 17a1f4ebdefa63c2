/**
 * The microserving operations of an engine (docs/ARCHITECTURE.md, request lifecycle steps 3-5):
 *
 * - `prep_recv` (receiver): match the prefix cache (at most min(end, len - 1) tokens, so the
 *   reserved range always holds the last prompt position privately), reserve pages for
 *   [matched, end), reply with every page id of [0, end). Refuses with KV_PAGES_EXHAUSTED.
 * - `kv_write` (receiver, host transport): bytes into pages of that reservation only.
 * - `remote_send` (sender): a `send` request computes what the sender's cache lacks of [0, end);
 *   the pages overlapping [max(begin, kvAddr.matchedLen), end) go into the receiver's pages with
 *   the same indexes (the last partial page goes whole). Over a GPU push transport (cuda-ipc,
 *   nvshmem) the receiver's pages are leased first (push.ts) and the forwards computing them write
 *   them layer by layer (engine-core.ts layerSend); cached pages follow whole. Otherwise they are
 *   copied (kv_copy pull) or read and written in chunks (host) after the compute. Pages the
 *   receiver already has cached are never sent. The deadline covers compute and send.
 * - `start_generate` on a reservation (startFromReservation): positions [0, begin) come from the
 *   reservation; [begin, len) is prefilled here. `begin == len` is taken as `len - 1`.
 */
import { MicroserveError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import type { KvAddr, KvWriteMsg, PrepRecvMsg, PrepRecvResult, RemoteSendMsg, RemoteSendResult } from '../messages.ts';
import type { EngineCore } from './engine-core.ts';
import { Request, requestKey } from './request.ts';
import { assertNoPush } from './push.ts';
import type { Reservation } from './reservations.ts';
import { transferError, type KvTransport } from './transfer.ts';
import { checkFits, checkId, checkInt, checkTokens } from './validate.ts';

const DEFAULT_TTL_MS = 30_000;

export function prepRecv(core: EngineCore, msg: Omit<PrepRecvMsg, 'type'>): PrepRecvResult {
  const op = 'prep_recv';
  core.assertOpen();
  const id = checkId(msg.id, op);
  const promptIds = checkTokens(msg.promptIds, core.backend.config.vocabSize, op);
  const end = checkInt(msg.end, op, 'end', 1, promptIds.length);
  const ttlMs = checkInt(msg.ttlMs ?? core.opts.defaultTtlMs ?? DEFAULT_TTL_MS, op, 'ttlMs', 1);
  if (core.requests.has(id) || core.reservations.has(id) || core.kv.getSeq(id)) {
    throw new MicroserveError('DUPLICATE_REQUEST', `${op}: request '${id}' already exists on ${core.name}`);
  }
  checkFits(promptIds.length, 0, core.capacity, op);
  const r = core.reservations.create(id, promptIds, end, ttlMs);
  core.counters.prefixHitTokens += r.matchedLen;
  const kvAddr: KvAddr = {
    engine: core.name,
    pageIds: [...r.seq.pageIds],
    pageSize: core.kv.pageSize,
    matchedLen: r.matchedLen,
    end,
    transports: core.opts.acceptTransports ?? ['host'],
    ...(core.opts.ipc ? { ipc: core.opts.ipc } : {}),
    ...(core.opts.nvshmem ? { nvshmem: core.opts.nvshmem } : {}),
  };
  return { matchedLen: r.matchedLen, kvAddr };
}

export async function kvWrite(core: EngineCore, msg: Omit<KvWriteMsg, 'type'>): Promise<{ ok: true }> {
  const op = 'kv_write';
  core.assertOpen();
  const id = checkId(msg.id, op);
  const { pageIds, data } = msg;
  if (!Array.isArray(pageIds) || pageIds.length === 0 || !pageIds.every((p) => Number.isInteger(p))) {
    throw new MicroserveError('BAD_MESSAGE', `${op} '${id}': pageIds must be a non-empty array of page ids`, { field: 'pageIds' });
  }
  if (!(data instanceof Uint8Array) || data.length !== pageIds.length * core.backend.pageBytes) {
    throw new MicroserveError('BAD_MESSAGE', `${op} '${id}': data must be ${pageIds.length} pages of ${core.backend.pageBytes} bytes`, { field: 'data' });
  }
  const { r, indexes } = core.reservations.beginWrite(id, pageIds);
  let isWritten = false;
  try {
    await core.backend.writePages(Int32Array.from(pageIds), data);
    isWritten = true;
  } finally {
    core.reservations.endWrite(r, isWritten ? indexes : null);
  }
  core.counters.bytesReceived += data.length;
  for (const i of indexes) core.counters.tokensReceived += core.reservations.tokensInPage(r, i);
  return { ok: true };
}

/** start_generate on a reservation: take its pages; compute from `begin` (see module comment). */
export function startFromReservation(core: EngineCore, req: Request, r: Reservation, begin: number): void {
  assertNoPush(core, r);
  for (let i = 0; i < r.end; i++) {
    if (r.promptIds[i] !== req.promptIds[i]) {
      throw new MicroserveError('BAD_REQUEST', `start_generate '${req.id}': promptIds differ from the prep_recv prompt at position ${i}`, { field: 'promptIds' });
    }
  }
  const ps = core.kv.pageSize;
  let start = Math.max(r.matchedLen, Math.min(begin, req.promptIds.length - 1, r.end));
  // KV for [matchedLen, start) must have arrived: a page no kv_write filled is recomputed.
  for (let i = r.matchedLen / ps; i * ps < start; i++) {
    if (!r.written.has(i)) {
      log.warn('start_generate: KV not received, recomputing', { engine: core.name, id: req.id, from: i * ps, begin: start });
      start = i * ps;
      break;
    }
  }
  core.reservations.take(r.id);
  req.seq = r.seq;
  req.numComputed = start;
  req.numCachedOnAdmit = r.matchedLen;
  core.scheduler.addRunning(req);
}

export async function remoteSend(core: EngineCore, msg: Omit<RemoteSendMsg, 'type'>): Promise<RemoteSendResult> {
  const op = 'remote_send';
  core.assertOpen();
  const id = checkId(msg.id, op);
  const promptIds = checkTokens(msg.promptIds, core.backend.config.vocabSize, op);
  const end = checkInt(msg.end, op, 'end', 1, promptIds.length);
  const begin = checkInt(msg.begin, op, 'begin', 0, end);
  const kvAddr = checkKvAddr(msg.kvAddr, end, core.kv.pageSize, op);
  const ttlMs = checkInt(msg.ttlMs ?? core.opts.defaultTtlMs ?? DEFAULT_TTL_MS, op, 'ttlMs', 1);
  const deadline = Date.now() + ttlMs;
  if (core.requests.has(requestKey('send', id))) throw new MicroserveError('DUPLICATE_REQUEST', `${op}: a send for '${id}' is already running on ${core.name}`);
  checkFits(end, 0, core.capacity, op);
  if (!core.opts.pickTransport) throw new MicroserveError('TRANSFER_FAILED', `${op}: engine ${core.name} has no KV transport`);
  let transport = core.opts.pickTransport(kvAddr);
  const ps = core.kv.pageSize;
  const sendFrom = Math.max(begin, kvAddr.matchedLen);
  const first = Math.floor(sendFrom / ps);
  const last = Math.ceil(end / ps);

  const req = new Request({ id, kind: 'send', promptIds: promptIds.slice(0, end) });
  // A push transport leases the receiver's pages before the compute starts: the forwards write them.
  let isLeased = false;
  let copying: Promise<unknown> | null = null;
  if (transport.push && first < last) {
    let peerId = -1;
    try {
      peerId = await transport.push.openPeer();
    } catch (e) {
      log.warn('KV push transport unavailable; falling back', { engine: core.name, id, transport: transport.name, error: (e as Error).message });
      transport = transport.fallback ?? transport;
    }
    if (transport.push) {
      await transport.push.begin(id, kvAddr.pageIds.slice(first, last), deadline);
      isLeased = true;
      req.push = { peerId, first, last, dstPageIds: kvAddr.pageIds, pushed: new Set() };
    }
  }
  core.requests.set(req.key, req);
  core.scheduler.enqueue(req);
  core.kick();
  const timer = setTimeout(() => core.stopSend(req, new MicroserveError('TRANSFER_TIMEOUT', `${op} '${id}' to ${kvAddr.engine} passed its ${ttlMs} ms deadline`)), ttlMs);
  try {
    await req.computed;
    let sentBytes = 0;
    if (req.push && transport.push) {
      // The forwards wrote every page they computed; pages served from this engine's prefix
      // cache go now, whole; then the receiver learns the pages hold the KV.
      const p = req.push;
      const rest: number[] = [];
      for (let i = first; i < last; i++) if (!p.pushed.has(i)) rest.push(i);
      if (rest.length > 0) {
        copying = core.backend.kvIpc!.copyPages(p.peerId, Int32Array.from(rest, (i) => req.seq!.pageIds[i]), Int32Array.from(rest, (i) => p.dstPageIds[i]), true);
        await Promise.race([copying, req.stopped]);
      }
      isLeased = false;
      await Promise.race([transport.push.end(id, true), req.stopped]);
      sentBytes = (last - first) * core.backend.pageBytes;
    } else {
      if (transport.copyPages && first < last) {
        // Device to device; any failure but the deadline (or a stop) falls back to the host path.
        try {
          sentBytes = await Promise.race([transport.copyPages(id, req.seq!.pageIds.slice(first, last), kvAddr.pageIds.slice(first, last), deadline), req.stopped]);
        } catch (e) {
          if (req.failure) throw req.failure;
          const err = transferError(e, kvAddr.engine);
          if (err.code === 'TRANSFER_TIMEOUT' || !transport.fallback) throw err;
          log.warn('KV transport failed; falling back', { engine: core.name, id, transport: transport.name, fallback: transport.fallback.name, error: err.message });
          transport = transport.fallback;
        }
      }
      const perChunk = Math.max(1, Math.floor(transport.maxChunkBytes / core.backend.pageBytes));
      for (let i = transport.copyPages ? last : first; i < last; i += perChunk) {
        const j = Math.min(last, i + perChunk);
        const data = await Promise.race([core.backend.readPages(Int32Array.from(req.seq!.pageIds.slice(i, j))), req.stopped]);
        try {
          await Promise.race([transport.write(id, kvAddr.pageIds.slice(i, j), data, deadline), req.stopped]);
        } catch (e) {
          throw req.failure ?? transferError(e, kvAddr.engine);
        }
        sentBytes += data.length;
      }
    }
    const sentTokens = first < last ? end - sendFrom : 0;
    core.counters.tokensSent += sentTokens;
    core.counters.bytesSent += sentBytes;
    core.counters.transfers[transport.name] = (core.counters.transfers[transport.name] ?? 0) + 1;
    return { computedTokens: req.numPrefilled, sentTokens, sentBytes, transport: transport.name };
  } catch (e) {
    throw req.failure ?? e;
  } finally {
    clearTimeout(timer);
    const cache = !req.isAborted && req.state === 'computed';
    req.state = 'finished';
    if (isLeased) void endLeaseAfterWrites(core, req, transport, copying);
    core.release(req, cache);
  }
}

/** A failed push: once no write of ours can still land (step over, copy done), end the lease unwritten. */
async function endLeaseAfterWrites(core: EngineCore, req: Request, transport: KvTransport, copying: Promise<unknown> | null): Promise<void> {
  await core.afterStep(req);
  await copying?.catch(() => {});
  await transport.push!.end(req.id, false).catch(() => {});
}

function checkKvAddr(a: unknown, end: number, pageSize: number, op: string): KvAddr {
  const k = a as KvAddr;
  const bad = (why: string) => new MicroserveError('BAD_REQUEST', `${op}: kvAddr ${why}`, { field: 'kvAddr' });
  if (typeof k !== 'object' || k === null || typeof k.engine !== 'string') throw bad('must name the receiving engine');
  if (k.pageSize !== pageSize) throw bad(`pageSize ${k.pageSize} differs from this engine's ${pageSize}`);
  if (!Array.isArray(k.pageIds) || k.pageIds.length < Math.ceil(end / pageSize) || !k.pageIds.every((p) => Number.isInteger(p))) {
    throw bad(`must list the page ids of positions [0, ${end})`);
  }
  if (!Number.isInteger(k.matchedLen) || k.matchedLen < 0 || k.matchedLen > end) throw bad('matchedLen must be in [0, end]');
  return k;
}
