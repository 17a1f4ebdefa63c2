/**
 * The `cuda-ipc` KV transport: engines on one host whose page pools are `cudaMalloc` buffers.
 * The receiver advertises its pool's CUDA IPC handle in KvAddr.ipc; the sender opens it (cached
 * per handle in the backend) and pushes: the forwards computing the pages write them into the
 * receiver's pool layer by layer (cudaMemcpy through the IPC mapping, on the transfer stream),
 * under a lease of the receiver (transport.ts PushOps, leases.ts). Falls back to `host`.
 *
 * The `kv_copy` pull this transport once had (the receiver copying after the sender's prefill,
 * behind MICROSERVE_KV_PUSH=0) is retired: the push replaced it.
 */
import { hostname } from 'node:os';
import type { Backend } from '../../../native/backend.ts';
import { log } from '../../../common/log.ts';
import type { KvAddr, KvIpcAddr } from '../../messages.ts';
import type { ActorSystemApi } from '../../runtime/types.ts';
import { hostTransport } from './host.ts';
import { noWrite, pushMessages, type KvTransport } from './transport.ts';

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

/** The sender's side: push into `peer`'s pool; `host` when the backend cannot. */
export function cudaIpcTransport(system: ActorSystemApi, dst: string, backend: Backend, peer: KvIpcAddr): KvTransport {
  const ipc = backend.kvIpc;
  const fallback = hostTransport(system, dst);
  if (!ipc) return fallback;
  return {
    name: 'cuda-ipc',
    maxChunkBytes: Number.MAX_SAFE_INTEGER,
    fallback,
    write: noWrite('cuda-ipc'),
    push: { openPeer: () => ipc.openPeer(peer.handle, peer.numPages), ...pushMessages(system, dst) },
  };
}
