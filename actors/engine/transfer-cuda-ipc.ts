/**
 * The `cuda-ipc` KV transport: engines on one host whose page pools are `cudaMalloc` buffers
 * exchange the pools' CUDA IPC handles (in KvAddr.ipc and kv_copy) and move pages GPU to GPU.
 *
 * The receiver pulls: the sender, once its KV is computed, sends `kv_copy` naming its own pool
 * and page ids; the receiver checks the reservation (as kv_write does), opens the sender's pool
 * (cached per handle in the backend), copies on its transfer stream, counts the bytes and
 * replies. The sender's pages stay held until the reply, so neither side's pages can be reused
 * while a copy runs. Any failure but the deadline makes the sender fall back to `host`.
 */
import { hostname } from 'node:os';
import type { Backend } from '../../native/backend.ts';
import { MicroserveError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import type { KvAddr, KvCopyMsg, KvIpcAddr } from '../messages.ts';
import type { ActorSystemApi } from '../runtime/types.ts';
import type { EngineCore } from './engine-core.ts';
import { hostTransport, pushMessages, transferError, type KvTransport } from './transfer.ts';
import { checkId } from './validate.ts';
import { env } from '../../common/env.ts';

/** This engine's pool as a KvIpcAddr, or null where the backend has no CUDA IPC (CPU). */
export async function exportIpcAddr(backend: Backend): Promise<KvIpcAddr | null> {
  if (!backend.kvIpc || !backend.device.startsWith('cuda')) return null;
  try {
    const { handle, deviceUuid } = await backend.kvIpc.exportPool();
    return { handle, deviceUuid, host: hostname(), pid: process.pid, numPages: backend.numPages, pageBytes: backend.pageBytes };
  } catch (e) {
    log.warn('CUDA IPC export of the KV pool failed; using host', { device: backend.device, error: (e as Error).message });
    return null;
  }
}

/** Whether `self` can reach the receiver of `kvAddr` through cuda-ipc. */
export function canUseCudaIpc(self: KvIpcAddr | undefined, kvAddr: KvAddr): boolean {
  const peer = kvAddr.ipc;
  return (
    !!self &&
    !!peer &&
    Array.isArray(kvAddr.transports) &&
    kvAddr.transports.includes('cuda-ipc') &&
    peer.host === self.host &&
    peer.pid !== self.pid && // a process cannot open its own IPC handle
    peer.pageBytes === self.pageBytes
  );
}

/**
 * The sender's side. Push (default): open the receiver's pool from its IPC handle and write into
 * it during the forwards (transfer.ts PushOps). `MICROSERVE_KV_PUSH=0` keeps the pull: a `kv_copy`
 * query once the KV is computed. Either falls back to `host`.
 */
export function cudaIpcTransport(system: ActorSystemApi, dstEngine: string, self: KvIpcAddr, backend?: Backend, peer?: KvIpcAddr): KvTransport {
  const ref = system.ref(`engine/${dstEngine}`);
  const ipc = backend?.kvIpc;
  const canPush = !!ipc && !!peer && env('kvPush');
  return {
    name: 'cuda-ipc',
    maxChunkBytes: Number.MAX_SAFE_INTEGER,
    fallback: hostTransport(system, dstEngine),
    ...(canPush ? { push: { openPeer: () => ipc!.openPeer(peer!.handle, peer!.numPages), ...pushMessages(system, dstEngine) } } : {}),
    write() {
      return Promise.reject(new MicroserveError('TRANSFER_FAILED', 'cuda-ipc moves pages with copyPages, not write'));
    },
    async copyPages(id, srcPageIds, dstPageIds, deadline) {
      const left = deadline - Date.now();
      if (left <= 0) throw new MicroserveError('TRANSFER_TIMEOUT', `KV transfer to ${dstEngine} passed its deadline`);
      const msg: KvCopyMsg = { type: 'kv_copy', id, pageIds: dstPageIds, srcPageIds, from: self };
      try {
        const r = (await ref.query(msg, left)) as { bytes: number };
        return r.bytes;
      } catch (e) {
        throw transferError(e, dstEngine);
      }
    },
  };
}

/** The receiver's side of `kv_copy`. */
export async function kvCopy(core: EngineCore, msg: Omit<KvCopyMsg, 'type'>): Promise<{ ok: true; bytes: number }> {
  const op = 'kv_copy';
  core.assertOpen();
  const id = checkId(msg.id, op);
  const { pageIds, srcPageIds, from } = msg;
  const ids = (a: unknown) => Array.isArray(a) && a.length > 0 && a.every((p) => Number.isInteger(p));
  if (!ids(pageIds) || !ids(srcPageIds) || pageIds.length !== srcPageIds.length) {
    throw new MicroserveError('BAD_MESSAGE', `${op} '${id}': pageIds and srcPageIds must be page id arrays of one length`, { field: 'pageIds' });
  }
  if (!from || !(from.handle instanceof Uint8Array) || from.handle.length !== 64 || !Number.isInteger(from.numPages)) {
    throw new MicroserveError('BAD_MESSAGE', `${op} '${id}': from must be a KvIpcAddr with a 64-byte handle`, { field: 'from' });
  }
  const ipc = core.backend.kvIpc;
  if (!ipc || from.pageBytes !== core.backend.pageBytes) {
    throw new MicroserveError('TRANSFER_FAILED', `${op} '${id}': engine ${core.name} cannot take cuda-ipc copies`);
  }
  const { r, indexes } = core.reservations.beginWrite(id, pageIds);
  let isWritten = false;
  try {
    const peer = await ipc.openPeer(from.handle, from.numPages);
    await ipc.copyPages(peer, Int32Array.from(pageIds), Int32Array.from(srcPageIds), false);
    isWritten = true;
  } finally {
    core.reservations.endWrite(r, isWritten ? indexes : null);
  }
  const bytes = pageIds.length * core.backend.pageBytes;
  core.counters.bytesReceived += bytes;
  for (const i of indexes) core.counters.tokensReceived += core.reservations.tokensInPage(r, i);
  return { ok: true, bytes };
}
