import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isMicroserveError } from '../../common/errors.ts';
import { KvCacheManager } from '../../actors/kvcache/manager.ts';
import { KvIntegrityError, type KvSeq } from '../../actors/kvcache/types.ts';

const PS = 4;
const seqOf = (n: number, base = 0) => Array.from({ length: n }, (_, i) => base + i);

function used(m: KvCacheManager) {
  const s = m.stats();
  return s.inUse + s.reserved;
}

test('fresh pool: all pages free, integrity holds', () => {
  const m = new KvCacheManager({ numPages: 8, pageSize: PS });
  assert.equal(m.stats(), { total: 8, free: 8, cached: 0, inUse: 0, reserved: 0 });
  m.checkIntegrity();
});

test('flush evicts every unreferenced cached page and keeps locked ones', () => {
  const m = new KvCacheManager({ numPages: 16, pageSize: PS });
  const a = seqOf(12);
  const { seq } = m.openSeq('a', a);
  m.grow(seq, 12);
  m.closeSeq(seq, { tokens: a, numValid: 12 });
  assert.is(m.stats().cached, 3);
  // a running request holding the first two cached pages
  const held = m.openSeq('b', [...a.slice(0, 8), 500, 501]);
  assert.is(held.matchedLen, 8);
  assert.is(m.flush(), 1, 'only the page no request holds goes');
  m.checkIntegrity();
  m.closeSeq(held.seq);
  assert.is(m.flush(), 2);
  assert.equal(m.stats(), { total: 16, free: 16, cached: 0, inUse: 0, reserved: 0 });
  assert.is(m.match(a).matchedLen, 0);
  m.checkIntegrity();
});

test('bad options fail at construction', () => {
  assert.throws(() => new KvCacheManager({ numPages: 0 }), /numPages/);
  assert.throws(() => new KvCacheManager({ numPages: 4, pageSize: 0 }), /pageSize/);
});

test('closing with cache makes full pages matchable; partial page is freed', () => {
  const m = new KvCacheManager({ numPages: 8, pageSize: PS });
  const toks = seqOf(10);
  const { seq, matchedLen } = m.openSeq('a', toks);
  assert.is(matchedLen, 0);
  m.grow(seq, 10);
  assert.is(seq.pageIds.length, 3);
  assert.is(m.stats().inUse, 3);
  m.closeSeq(seq, { tokens: toks, numValid: 10 });
  assert.equal(m.stats(), { total: 8, free: 6, cached: 2, inUse: 0, reserved: 0 });
  const r = m.match(toks);
  assert.is(r.matchedLen, 8);
  assert.equal(r.pageIds, seq.pageIds.slice(0, 2));
  assert.is(m.match(toks, 7).matchedLen, 4, 'maxLen caps the match at whole pages');
  assert.is(m.match([0, 1, 2, 99, 4]).matchedLen, 0, 'a mismatch inside the first page matches nothing');
  m.checkIntegrity();
});

test('a locked prefix is shared, counted inUse, and not evictable', () => {
  const m = new KvCacheManager({ numPages: 4, pageSize: PS });
  const toks = seqOf(8);
  const a = m.openSeq('a', toks).seq;
  m.grow(a, 8);
  m.closeSeq(a, { tokens: toks, numValid: 8 });
  const b = m.openSeq('b', [...toks, 50, 51], { maxMatchLen: 9 });
  assert.is(b.matchedLen, 8);
  assert.equal(m.stats(), { total: 4, free: 2, cached: 0, inUse: 2, reserved: 0 });
  assert.not.ok(m.canAllocate(3), 'locked pages are not evictable');
  assert.ok(m.canAllocate(2));
  m.grow(b.seq, 12);
  m.checkIntegrity();
  m.closeSeq(b.seq);
  assert.equal(m.stats(), { total: 4, free: 2, cached: 2, inUse: 0, reserved: 0 });
  m.checkIntegrity();
});

test('allocation evicts least recently used cached pages, leaf tails first', () => {
  const m = new KvCacheManager({ numPages: 6, pageSize: PS });
  for (const [id, base] of [['x', 100], ['y', 200]] as const) {
    const t = seqOf(12, base);
    const s = m.openSeq(id, t).seq;
    m.grow(s, 12);
    m.closeSeq(s, { tokens: t, numValid: 12 });
  }
  assert.equal(m.stats().cached, 6);
  m.match(seqOf(12, 100)); // pure: does not refresh x
  const s = m.openSeq('z', seqOf(4, 300)).seq;
  m.grow(s, 8); // needs 2: x is older, its last two pages go
  assert.is(m.match(seqOf(12, 100)).matchedLen, 4);
  assert.is(m.match(seqOf(12, 200)).matchedLen, 12);
  assert.is(m.numEvictedPages, 2);
  m.checkIntegrity();
  m.closeSeq(s);
  m.checkIntegrity();
});

test('openSeq refreshes LRU: the touched prefix survives eviction', () => {
  const m = new KvCacheManager({ numPages: 4, pageSize: PS });
  for (const base of [100, 200]) {
    const t = seqOf(8, base);
    const s = m.openSeq(`s${base}`, t).seq;
    m.grow(s, 8);
    m.closeSeq(s, { tokens: t, numValid: 8 });
  }
  const touch = m.openSeq('t', seqOf(8, 100));
  m.closeSeq(touch.seq);
  const s = m.openSeq('n', seqOf(4, 300)).seq;
  m.grow(s, 8);
  assert.is(m.match(seqOf(8, 100)).matchedLen, 8);
  assert.is(m.match(seqOf(8, 200)).matchedLen, 0);
  m.closeSeq(s);
  m.checkIntegrity();
});

test('duplicate pages computed twice are freed on insert', () => {
  const m = new KvCacheManager({ numPages: 8, pageSize: PS });
  const t = seqOf(8);
  const a = m.openSeq('a', t).seq;
  const b = m.openSeq('b', t).seq;
  m.grow(a, 8);
  m.grow(b, 8);
  m.closeSeq(a, { tokens: t, numValid: 8 });
  const r = m.closeSeq(b, { tokens: t, numValid: 8 })!;
  assert.is(r.numNewPages, 0);
  assert.equal(r.duplicatePageIds, b.pageIds);
  assert.equal(m.stats(), { total: 8, free: 6, cached: 2, inUse: 0, reserved: 0 });
  m.checkIntegrity();
});

test('diverging inserts split nodes; locks follow the split', () => {
  const m = new KvCacheManager({ numPages: 16, pageSize: PS });
  const t1 = seqOf(12);
  const a = m.openSeq('a', t1).seq;
  m.grow(a, 12);
  m.closeSeq(a, { tokens: t1, numValid: 12 });
  const held = m.openSeq('held', t1, { maxMatchLen: 12 }); // locks the whole 3-page node
  assert.is(held.matchedLen, 12);
  const t2 = [...seqOf(4), 90, 91, 92, 93, 94];
  const b = m.openSeq('b', t2);
  assert.is(b.matchedLen, 4, 'the shared first page is matched (node split)');
  m.grow(b.seq, 9);
  m.closeSeq(b.seq, { tokens: t2, numValid: 9 });
  m.checkIntegrity();
  m.closeSeq(held.seq);
  m.checkIntegrity();
  assert.is(m.match(t1).matchedLen, 12);
  assert.is(m.match(t2).matchedLen, 8);
});

/** Open reservations whose deadline is at or before `now` (the engine's ReservationTable times them out itself). */
function expiredReservations(m: KvCacheManager, ids: string[], now: number): KvSeq[] {
  return ids.map((id) => m.getSeq(id)).filter((s): s is KvSeq => !!s && s.kind === 'reserved' && s.deadline !== undefined && s.deadline <= now);
}

test('reservations: reserved count, activate, deadline cleared', () => {
  const m = new KvCacheManager({ numPages: 8, pageSize: PS });
  const r = m.openSeq('r', seqOf(10), { kind: 'reserved', deadline: 1000 }).seq;
  m.grow(r, 10);
  assert.equal(m.stats(), { total: 8, free: 5, cached: 0, inUse: 0, reserved: 3 });
  assert.equal(expiredReservations(m, ['r'], 999), []);
  assert.equal(expiredReservations(m, ['r'], 1000).map((s) => s.id), ['r']);
  m.activate(r);
  assert.equal(m.stats(), { total: 8, free: 5, cached: 0, inUse: 3, reserved: 0 });
  assert.equal(expiredReservations(m, ['r'], 5000), []);
  m.closeSeq(r);
  assert.is(used(m), 0);
  m.checkIntegrity();
});

test('exhaustion is a typed error and changes nothing', () => {
  const m = new KvCacheManager({ numPages: 2, pageSize: PS });
  const s = m.openSeq('a', seqOf(4)).seq;
  assert.not.ok(m.canGrow(s, 12));
  try {
    m.grow(s, 12);
    assert.unreachable();
  } catch (e) {
    assert.ok(isMicroserveError(e, 'KV_PAGES_EXHAUSTED'));
  }
  assert.is(s.pageIds.length, 0);
  m.checkIntegrity();
  assert.throws(() => m.openSeq('a', seqOf(4)), (e: unknown) => isMicroserveError(e, 'DUPLICATE_REQUEST'));
});

test('checkIntegrity names the failed equation', () => {
  const m = new KvCacheManager({ numPages: 4, pageSize: PS });
  m.freeList.push(m.freeList[0]);
  assert.throws(() => m.checkIntegrity(), (e: unknown) => e instanceof KvIntegrityError && /owned twice/.test(e.message));
  const m2 = new KvCacheManager({ numPages: 4, pageSize: PS });
  m2.freeList.pop();
  assert.throws(() => m2.checkIntegrity(), (e: unknown) => e instanceof KvIntegrityError && /no owner \(leaked\)/.test(e.message));
  const m3 = new KvCacheManager({ numPages: 4, pageSize: PS });
  const s = m3.openSeq('a', seqOf(4)).seq;
  m3.grow(s, 4);
  s.kind = 'reserved'; // bypasses activate(): the reserved count no longer matches
  assert.throws(() => m3.checkIntegrity(), (e: unknown) => e instanceof KvIntegrityError && /inUse \(1\) != recount \(0\)/.test(e.message));
});

test.run();
