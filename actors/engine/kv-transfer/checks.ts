/**
 * The field checks of the KV-transfer messages, each written once: page-id lists (kv_write,
 * kv_push_begin) and the receiver's address of a remote_send (kvAddr). Failures are typed
 * errors naming the field.
 */
import { MicroserveError } from '../../../common/errors.ts';
import type { KvAddr } from '../../messages.ts';

function isPageIdList(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((p) => Number.isInteger(p));
}

/** A non-empty array of integer page ids, else BAD_MESSAGE naming `field`. */
export function checkPageIds(v: unknown, op: string, id: string, field = 'pageIds'): number[] {
  if (!isPageIdList(v) || v.length === 0) {
    throw new MicroserveError('BAD_MESSAGE', `${op} '${id}': ${field} must be a non-empty array of page ids`, { field });
  }
  return v;
}

/** remote_send's kvAddr: names the receiver, same page size, page ids for every page of [0, end). */
export function checkKvAddr(a: unknown, end: number, pageSize: number, op: string): KvAddr {
  const k = a as KvAddr;
  const bad = (why: string) => new MicroserveError('BAD_REQUEST', `${op}: kvAddr ${why}`, { field: 'kvAddr' });
  if (typeof k !== 'object' || k === null || typeof k.engine !== 'string') throw bad('must name the receiving engine');
  if (k.pageSize !== pageSize) throw bad(`pageSize ${k.pageSize} differs from this engine's ${pageSize}`);
  if (!isPageIdList(k.pageIds) || k.pageIds.length < Math.ceil(end / pageSize)) throw bad(`must list the page ids of positions [0, ${end})`);
  if (!Number.isInteger(k.matchedLen) || k.matchedLen < 0 || k.matchedLen > end) throw bad('matchedLen must be in [0, end]');
  return k;
}
