/**
 * The NVSHMEM bootstrap of `up`: the control node's `nvshmem` actor hands each job's unique id
 * from its rank 0 to the other members. A job is named by its members and an epoch (a new set of
 * engine processes is a new job: NVSHMEM membership is fixed at init and cannot be re-joined).
 *
 * Messages: `claim {job, rank}` → `{ first }` — false when that rank of the job was claimed
 * before, i.e. this process is a restart of a member: it must not join (the others will not init
 * again) and runs without NVSHMEM. `publish {job, uid | null, error?}` from rank 0 (null: it
 * could not make one; the others then run without NVSHMEM too). `get {job}` → `{ uid, error }`,
 * uid undefined while rank 0 has not published yet.
 */
import { MicroserveError } from '../common/errors.ts';
import { messageParser, NvshmemMsgSchema } from '../actors/messages.ts';
import type { ActorSystemApi } from '../actors/runtime/types.ts';

interface Job {
  claimed: Set<number>;
  uid?: Uint8Array | null;
  error?: string;
}

export const RENDEZVOUS_PATH = 'nvshmem';

export function spawnNvshmemRendezvous(system: ActorSystemApi): void {
  const jobs = new Map<string, Job>();
  const parse = messageParser(RENDEZVOUS_PATH, NvshmemMsgSchema);
  const job = (name: string): Job => {
    let j = jobs.get(name);
    if (!j) jobs.set(name, (j = { claimed: new Set() }));
    return j;
  };
  system.spawn(RENDEZVOUS_PATH, (raw: unknown) => {
    const msg = parse(raw);
    switch (msg.type) {
      case 'claim': {
        const j = job(msg.job);
        const first = !j.claimed.has(msg.rank);
        j.claimed.add(msg.rank);
        return { first };
      }
      case 'publish': {
        const j = job(msg.job);
        if (j.uid !== undefined) throw new MicroserveError('DUPLICATE_REQUEST', `nvshmem publish: job '${msg.job}' already has its id`);
        j.uid = msg.uid === null ? null : Uint8Array.from(msg.uid);
        j.error = msg.error;
        return { ok: true };
      }
      case 'get': {
        const j = job(msg.job);
        return { uid: j.uid, error: j.error };
      }
    }
  });
}
