/**
 * Transport choice, per receiver: nvshmem inside one NVSHMEM job, cuda-ipc between processes of
 * one host, host otherwise (and whenever the receiver accepts it). A receiver that accepts none
 * of this engine's transports is a TRANSFER_FAILED, never a hang.
 */
import type { Backend } from '../../../native/backend.ts';
import { MicroserveError } from '../../../common/errors.ts';
import type { KvAddr, KvIpcAddr, KvNvshmemAddr } from '../../messages.ts';
import type { ActorSystemApi } from '../../runtime/types.ts';
import { canUseCudaIpc, cudaIpcTransport } from './cuda-ipc.ts';
import { hostTransport } from './host.ts';
import { canUseNvshmem, nvshmemTransport } from './nvshmem.ts';
import type { KvTransport, TransportPicker } from './transport.ts';

/** What this engine has to reach others: its CUDA IPC pool and its NVSHMEM place, when it has them. */
export interface LocalTransports {
  ipc?: KvIpcAddr;
  nvshmem?: KvNvshmemAddr;
}

/** The transports this engine advertises in its KvAddr, fastest first. */
export function acceptedTransports(self: LocalTransports): string[] {
  return self.nvshmem ? ['nvshmem', 'host'] : self.ipc ? ['cuda-ipc', 'host'] : ['host'];
}

export function transportPicker(system: ActorSystemApi, backend: Backend, self: LocalTransports): TransportPicker {
  return (kvAddr: KvAddr): KvTransport => {
    if (self.nvshmem && canUseNvshmem(self.nvshmem, kvAddr)) return nvshmemTransport(system, kvAddr.engine, backend, kvAddr.nvshmem!);
    if (self.ipc && canUseCudaIpc(self.ipc, kvAddr)) return cudaIpcTransport(system, kvAddr.engine, backend, kvAddr.ipc!);
    if (Array.isArray(kvAddr.transports) && !kvAddr.transports.includes('host')) {
      throw new MicroserveError('TRANSFER_FAILED', `engine ${kvAddr.engine} accepts ${kvAddr.transports.join(', ')}; this engine only has 'host'`);
    }
    return hostTransport(system, kvAddr.engine);
  };
}
