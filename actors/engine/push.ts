/**
 * GPU push transfers, receiver side (`kv_push_begin` / `kv_push_end`, see messages.ts).
 *
 * With cuda-ipc and nvshmem the sender writes into this engine's reserved pages from its own GPU
 * stream, layer by layer while it prefills, so the writes are not this process's to wait for.
 * A lease makes that safe: `kv_push_begin` registers the push as a pending write of the
 * reservation (reservations.ts), so an abort or an expiry meanwhile keeps the pages out of the
 * pool (quarantined) until the lease ends; `start_generate` on it is refused while it lives.
 * `kv_push_end` ends the lease, marking the pages written when the sender says its writes
 * completed. A lease whose end never comes (the sender died or hung) ends by itself at the
 * sender's deadline plus LEASE_GRACE_MS: a live sender stops issuing writes at its deadline and
 * one forward step finishes well within the grace.
 */
import { MicroserveError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import type { KvPushBeginMsg, KvPushEndMsg } from '../messages.ts';
import type { EngineCore } from './engine-core.ts';
import type { Reservation } from './reservations.ts';
import { checkId, checkInt } from './validate.ts';

/** [EngineCoreOptions.pushLeaseGraceMs] how long after the sender's deadline an unfinished push lease still quarantines its pages. */
export const LEASE_GRACE_MS = 10_000;

interface Lease {
  r: Reservation;
  indexes: number[];
  timer: NodeJS.Timeout;
}

const leases = new WeakMap<EngineCore, Map<string, Lease>>();

function leasesOf(core: EngineCore): Map<string, Lease> {
  let m = leases.get(core);
  if (!m) leases.set(core, (m = new Map()));
  return m;
}

/** Number of live push leases on `core` (status and tests). */
export function numPushLeases(core: EngineCore): number {
  return leases.get(core)?.size ?? 0;
}

export function kvPushBegin(core: EngineCore, msg: Omit<KvPushBeginMsg, 'type'>): { ok: true } {
  const op = 'kv_push_begin';
  core.assertOpen();
  const id = checkId(msg.id, op);
  const { pageIds } = msg;
  if (!Array.isArray(pageIds) || pageIds.length === 0 || !pageIds.every((p) => Number.isInteger(p))) {
    throw new MicroserveError('BAD_MESSAGE', `${op} '${id}': pageIds must be a non-empty array of page ids`, { field: 'pageIds' });
  }
  const ttlMs = checkInt(msg.ttlMs, op, 'ttlMs', 1);
  const mine = leasesOf(core);
  if (mine.has(id)) throw new MicroserveError('DUPLICATE_REQUEST', `${op}: a push for '${id}' is already running into ${core.name}`);
  const { r, indexes } = core.reservations.beginWrite(id, pageIds);
  const timer = setTimeout(() => {
    log.warn('KV push lease ended without kv_push_end; pages released unwritten', { engine: core.name, id, pages: indexes.length });
    end(core, id, false);
  }, ttlMs + (core.opts.pushLeaseGraceMs ?? LEASE_GRACE_MS));
  timer.unref?.();
  mine.set(id, { r, indexes, timer });
  return { ok: true };
}

export function kvPushEnd(core: EngineCore, msg: Omit<KvPushEndMsg, 'type'>): { ok: true; bytes: number } {
  const op = 'kv_push_end';
  const id = checkId(msg.id, op);
  if (typeof msg.ok !== 'boolean') throw new MicroserveError('BAD_MESSAGE', `${op} '${id}': ok must be a boolean`, { field: 'ok' });
  if (!leasesOf(core).has(id)) throw new MicroserveError('TRANSFER_TIMEOUT', `${op}: no live push lease for '${id}' on ${core.name} (it ended at its deadline, or never began)`);
  return { ok: true, bytes: end(core, id, msg.ok) };
}

/** Ends the lease; with `written` the pages count as received. Returns the bytes received. */
function end(core: EngineCore, id: string, written: boolean): number {
  const mine = leasesOf(core);
  const l = mine.get(id);
  if (!l) return 0;
  clearTimeout(l.timer);
  mine.delete(id);
  const isLive = !l.r.isClosing;
  core.reservations.endWrite(l.r, written && isLive ? l.indexes : null);
  if (!written || !isLive) return 0;
  const bytes = l.indexes.length * core.backend.pageBytes;
  core.counters.bytesReceived += bytes;
  for (const i of l.indexes) core.counters.tokensReceived += core.reservations.tokensInPage(l.r, i);
  return bytes;
}

/** start_generate on a reservation a push may still write into is refused (typed). */
export function assertNoPush(core: EngineCore, r: Reservation): void {
  if (leases.get(core)?.has(r.id)) {
    throw new MicroserveError('TRANSFER_IN_PROGRESS', `start_generate '${r.id}': a KV push into its pages has not finished (wait for remote_send's reply)`);
  }
}
