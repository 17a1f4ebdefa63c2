/**
 * The `nvshmem` KV transport: engines of one NVSHMEM job (started together by `up`, one PE each;
 * nvshmem-join.ts) keep their page pools in the job's symmetric heap, so a sender writes into a
 * receiver's pages by PE with one-sided GPU writes: through nvshmem_ptr where the GPU reaches the
 * peer by load/store (the same GPU, NVLink), otherwise nvshmemx_putmem_on_stream, always on the
 * sender's transfer stream, layer by layer during its prefill (transport.ts PushOps; the
 * receiver's lease rules are in leases.ts). Completion: the sender quiets and syncs its transfer
 * stream, then tells the receiver with kv_push_end (no *_wait_until: limited-MPG jobs on one GPU
 * lack it). A pool from nvshmem_malloc cannot be shared by legacy CUDA IPC, so the fallback is `host`.
 */
import type { Backend } from '../../../native/backend.ts';
import { MicroserveError } from '../../../common/errors.ts';
import type { KvAddr, KvNvshmemAddr } from '../../messages.ts';
import type { ActorSystemApi } from '../../runtime/types.ts';
import { hostTransport } from './host.ts';
import { noWrite, pushMessages, type KvTransport } from './transport.ts';

/** Whether `self` can write into the receiver of `kvAddr` over NVSHMEM: same job, same pool shape. */
export function canUseNvshmem(self: KvNvshmemAddr | undefined, kvAddr: KvAddr): boolean {
  const peer = kvAddr.nvshmem;
  return (
    !!self &&
    !!peer &&
    Array.isArray(kvAddr.transports) &&
    kvAddr.transports.includes('nvshmem') &&
    peer.job === self.job &&
    peer.pe !== self.pe &&
    peer.pageBytes === self.pageBytes &&
    peer.numPages === self.numPages
  );
}

export function nvshmemTransport(system: ActorSystemApi, dst: string, backend: Backend, peer: KvNvshmemAddr): KvTransport {
  const ipc = backend.kvIpc;
  return {
    name: 'nvshmem',
    maxChunkBytes: Number.MAX_SAFE_INTEGER,
    fallback: hostTransport(system, dst),
    write: noWrite('nvshmem'),
    push: {
      async openPeer() {
        if (!ipc) throw new MicroserveError('TRANSFER_FAILED', `backend ${backend.device} has no GPU KV transfer`);
        return (await ipc.openNvshmemPeer(peer.pe)).peerId;
      },
      ...pushMessages(system, dst),
    },
  };
}
