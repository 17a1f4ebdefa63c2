/**
 * An engine's side of the NVSHMEM bootstrap (supervisors/nvshmem-rendezvous.ts has the control
 * side): claim this rank of the job; rank 0 makes the unique id and publishes it, the others wait
 * for it. Resolves to what openModel needs to join, or null when this engine must run without
 * NVSHMEM (a restarted member, or rank 0 could not make an id); the reason is logged.
 */
import { nvshmemUniqueId } from '../../../native/index.ts';
import { MicroserveError } from '../../../common/errors.ts';
import { log } from '../../../common/log.ts';
import type { ActorSystemApi } from '../../runtime/types.ts';

/** An engine's place in an NVSHMEM job, as `up` assigns it. */
export interface NvshmemSpec {
  /** Job name: host, members and epoch. */
  job: string;
  rank: number;
  nranks: number;
}

/** [waitMs=300000] how long a member waits for rank 0's id (rank 0 may still be starting). */
export async function nvshmemRendezvous(system: ActorSystemApi, engine: string, spec: NvshmemSpec, waitMs = 300_000): Promise<{ uid: Uint8Array; rank: number; nranks: number } | null> {
  const ref = system.ref('nvshmem');
  const { job, rank, nranks } = spec;
  // Single host, one job: bootstrap on loopback, no network transport, no NVLink multicast.
  process.env.NVSHMEM_BOOTSTRAP_UID_SOCK_IFNAME ??= 'lo';
  process.env.NVSHMEM_REMOTE_TRANSPORT ??= 'none';
  process.env.NVSHMEM_DISABLE_NVLS ??= '1';
  const { first } = (await ref.query({ type: 'claim', job, rank }, 10_000)) as { first: boolean };
  if (!first) {
    log.warn('NVSHMEM: this engine restarted after its job began; it runs without NVSHMEM until the job restarts (transport host)', { engine, job, rank });
    return null;
  }
  if (rank === 0) {
    let uid: Uint8Array | null = null;
    let error: string | undefined;
    try {
      uid = nvshmemUniqueId();
    } catch (e) {
      error = (e as Error).message;
      log.warn('NVSHMEM: no unique id; the job runs without NVSHMEM', { engine, job, error });
    }
    await ref.query({ type: 'publish', job, uid, ...(error ? { error } : {}) }, 10_000);
    return uid ? { uid, rank, nranks } : null;
  }
  const until = Date.now() + waitMs;
  for (;;) {
    const r = (await ref.query({ type: 'get', job }, 10_000)) as { uid?: Uint8Array | null; error?: string };
    if (r.uid === null) {
      log.warn('NVSHMEM: rank 0 could not make the job; running without NVSHMEM', { engine, job, error: r.error });
      return null;
    }
    if (r.uid instanceof Uint8Array) return { uid: Uint8Array.from(r.uid), rank, nranks };
    if (Date.now() > until) throw new MicroserveError('NO_DEVICE', `NVSHMEM job '${job}': rank 0 did not publish its id within ${waitMs} ms`);
    await new Promise((res) => setTimeout(res, 200));
  }
}
