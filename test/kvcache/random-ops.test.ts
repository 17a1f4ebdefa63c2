/**
 * Randomized: 1000 random operations (open, grow, close with and without caching, reservations,
 * activation, expiry, aborts, lookups) on a small pool with a small alphabet so prefixes are
 * shared, split and evicted often. The integrity check runs after every operation; at the end,
 * closing everything leaves no page in use.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isMicroserveError } from '../../common/errors.ts';
import { KvCacheManager } from '../../actors/kvcache/manager.ts';
import type { KvSeq } from '../../actors/kvcache/types.ts';
import { xorshift as rng } from '../shared/xorshift.ts';

for (const seed of [1, 2, 3]) {
  test(`1000 random ops keep the invariant (seed ${seed})`, () => {
    const rand = rng(seed);
    const int = (n: number) => Math.floor(rand() * n);
    const PS = 4;
    const m = new KvCacheManager({ numPages: 24, pageSize: PS });
    // A few shared stems, cut at random lengths, so prefixes share, split and diverge inside nodes.
    const bases = Array.from({ length: 4 }, () => Array.from({ length: 24 }, () => int(3)));
    const live = new Map<string, { seq: KvSeq; tokens: number[]; numValid: number }>();
    let next = 0;
    let numExhausted = 0;
    const counts: Record<string, number> = {};
    for (let op = 0; op < 1000; op++) {
      const kind = int(9);
      counts[kind] = (counts[kind] ?? 0) + 1;
      const ids = [...live.keys()];
      const pick = () => live.get(ids[int(ids.length)])!;
      try {
        if (kind <= 1 || kind === 8 || ids.length === 0) {
          // open: prompts from a tiny alphabet, so prefixes collide
          const base = bases[int(bases.length)].slice(0, int(25));
          const tokens = [...base, ...Array.from({ length: 1 + int(8) }, () => int(3))];
          const len = tokens.length;
          const isReserved = kind === 1;
          const id = `r${next++}`;
          const { seq, matchedLen } = m.openSeq(id, tokens, { maxMatchLen: len - 1, kind: isReserved ? 'reserved' : 'inUse', deadline: isReserved ? op + int(50) : undefined });
          assert.is(matchedLen % PS, 0);
          live.set(id, { seq, tokens, numValid: matchedLen });
          if (m.canGrow(seq, len)) m.grow(seq, len);
          else {
            numExhausted++;
            m.closeSeq(seq);
            live.delete(id);
          }
        } else if (kind === 2) {
          // decode: append a token and grow
          const r = pick();
          if (r.seq.kind === 'inUse') {
            r.numValid = r.tokens.length;
            r.tokens.push(int(3));
            if (m.canGrow(r.seq, r.tokens.length)) m.grow(r.seq, r.tokens.length);
            else numExhausted++;
          }
        } else if (kind === 3 || kind === 4) {
          // finish: cache what is valid
          const r = pick();
          m.closeSeq(r.seq, { tokens: r.tokens, numValid: Math.min(r.numValid + int(PS * 2), r.seq.pageIds.length * PS) });
          live.delete(r.seq.id);
        } else if (kind === 5) {
          // abort: free without caching
          const r = pick();
          m.closeSeq(r.seq);
          live.delete(r.seq.id);
        } else if (kind === 6) {
          const expired = [...live.values()].map((x) => x.seq).filter((s) => s.kind === 'reserved' && s.deadline !== undefined && s.deadline <= op);
          for (const s of expired) {
            m.closeSeq(s);
            live.delete(s.id);
          }
          const r = pick();
          if (r && r.seq.kind === 'reserved') m.activate(r.seq);
        } else {
          const t = Array.from({ length: int(40) }, () => int(3));
          const res = m.match(t);
          assert.is(res.pageIds.length * PS, res.matchedLen);
        }
      } catch (e) {
        if (!isMicroserveError(e, 'KV_PAGES_EXHAUSTED')) throw e;
        numExhausted++;
      }
      m.checkIntegrity();
    }
    assert.ok(numExhausted > 0, 'the pool ran short at least once (eviction/exhaustion exercised)');
    assert.ok(m.numEvictedPages > 0, 'eviction happened');
    for (const r of live.values()) m.closeSeq(r.seq);
    m.checkIntegrity();
    const st = m.stats();
    assert.is(st.inUse + st.reserved, 0);
    assert.is(st.free + st.cached, st.total);
  });
}

test.run();
