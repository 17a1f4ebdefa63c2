/**
 * Eviction order and scale: the radix tree keeps its eviction candidates between calls (a lazy
 * heap), so every eviction must still take the least recently used evictable leaf's tail page,
 * as a walk of the whole tree would; and a pool of hundreds of thousands of pages must flush
 * and grow without spreading its ids into one call (a stack overflow past ~100k arguments).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { KvCacheManager } from '../../actors/kvcache/manager.ts';
import { RadixTree, type RadixNode } from '../../actors/kvcache/radix-tree.ts';
import { xorshift as rng } from '../shared/xorshift.ts';

/** The tail pages of the evictable leaves with the oldest access, by a walk of the whole tree. */
function lruTails(t: RadixTree): Set<number> {
  let oldest = Infinity;
  const leaves: RadixNode[] = [];
  for (const n of t.nodes()) {
    if (n.lockRef !== 0 || n.children.size !== 0 || n.pages.length === 0) continue;
    leaves.push(n);
    oldest = Math.min(oldest, n.lastAccess);
  }
  return new Set(leaves.filter((n) => n.lastAccess === oldest).map((n) => n.pages[n.pages.length - 1]));
}

for (const seed of [1, 2, 3]) {
  test(`every eviction takes the least recently used leaf's tail (seed ${seed})`, () => {
    const rand = rng(seed);
    const int = (n: number) => Math.floor(rand() * n);
    const PS = 2;
    const t = new RadixTree(PS);
    const stems = Array.from({ length: 5 }, () => Array.from({ length: 20 }, () => int(3)));
    const locked: RadixNode[] = [];
    let nextPage = 0;
    let numChecked = 0;
    for (let op = 0; op < 3000; op++) {
      const kind = int(6);
      if (kind <= 1) {
        // cache a sequence: a stem's prefix and a random tail, new page ids where not cached
        const tokens = [...stems[int(stems.length)].slice(0, 2 * int(10)), ...Array.from({ length: 2 * (1 + int(4)) }, () => int(3))];
        const pages = Array.from({ length: tokens.length / PS }, () => nextPage++);
        t.insert(tokens, pages);
      } else if (kind === 2) {
        // a request opens on a cached prefix: touched and locked
        const tokens = [...stems[int(stems.length)].slice(0, 2 * int(10)), ...Array.from({ length: 4 }, () => int(3))];
        const { node } = t.matchAndSplit(tokens, Math.floor(tokens.length / PS));
        if (node !== t.root) {
          t.lock(node);
          locked.push(node);
        }
      } else if (kind === 3 && locked.length > 0) {
        t.unlock(locked.splice(int(locked.length), 1)[0]);
      } else if (t.numCachedPages > 0) {
        const expected = lruTails(t);
        const before = t.numCachedPages;
        const freed = t.evict(1);
        assert.is(freed.length, 1);
        assert.ok(expected.has(freed[0]), `op ${op}: page ${freed[0]} is not the tail of a least recently used leaf (${[...expected]})`);
        assert.is(t.numCachedPages, before - 1);
        numChecked++;
      }
    }
    assert.ok(numChecked > 300, `evictions checked: ${numChecked}`);
    // everything not locked can still go, and then nothing is cached
    for (const n of locked) t.unlock(n);
    const all = t.numCachedPages;
    assert.is(t.evict(all + 10).length, all);
    assert.is(t.numCachedPages, 0);
  });
}

test('a pool of 300k pages grows one sequence over all of it, caches it and flushes it', () => {
  const N = 300_000;
  const m = new KvCacheManager({ numPages: N, pageSize: 1 });
  const tokens = Array.from({ length: N }, (_, i) => i);
  const { seq } = m.openSeq('big', tokens);
  m.grow(seq, N);
  m.closeSeq(seq, { tokens, numValid: N });
  assert.is(m.stats().cached, N);
  assert.is(m.flush(), N);
  assert.equal(m.stats(), { total: N, free: N, cached: 0, inUse: 0, reserved: 0 });
  m.checkIntegrity();
});

test.run();
