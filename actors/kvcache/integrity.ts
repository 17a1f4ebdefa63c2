/**
 * The KV accounting's invariants, recomputed from scratch (O(pages + nodes)) and compared with the
 * manager's running counts. Used by tests and by the engine whenever it goes idle.
 *
 * 1. every page id is owned exactly once: free list, a radix node, or one sequence's private part;
 * 2. free + cached + inUse + reserved == total, and each term equals its recount;
 * 3. a node's lockRef == locks taken on it directly + the sum of its children's lockRef;
 * 4. a sequence's prefix pages are exactly the pages on the radix path to its locked node;
 * 5. a node's tokens are exactly pages * pageSize long and its key is its first page.
 */
import type { RadixNode, RadixTree } from './radix-tree.ts';
import type { KvPageStats } from '../messages.ts';
import { KvIntegrityError, type KvSeq } from './types.ts';

/** What the check reads of a manager (KvCacheManager has it; no import of the manager, no cycle). */
export interface IntegrityView {
  readonly numPages: number;
  readonly pageSize: number;
  readonly freeList: readonly number[];
  readonly tree: RadixTree;
  readonly seqs: ReadonlyMap<string, KvSeq>;
  stats(): KvPageStats;
}

export function checkIntegrity(m: IntegrityView): void {
  const owner: (string | null)[] = new Array(m.numPages).fill(null);
  const own = (page: number, who: string) => {
    if (!Number.isInteger(page) || page < 0 || page >= m.numPages) throw new KvIntegrityError(`page id ${page} owned by ${who} is out of range [0, ${m.numPages})`);
    if (owner[page] !== null) throw new KvIntegrityError(`page ${page} owned twice: by ${owner[page]} and by ${who}`);
    owner[page] = who;
  };

  for (const p of m.freeList) own(p, 'free list');

  let numCached = 0;
  let numLocked = 0;
  const directLocks = new Map<RadixNode, number>();
  for (const s of m.seqs.values()) directLocks.set(s.node, (directLocks.get(s.node) ?? 0) + 1);
  const tree = m.tree;
  for (const n of tree.nodes()) {
    if (n.pages.length === 0) throw new KvIntegrityError('a radix node holds no page');
    if (n.tokens.length !== n.pages.length * m.pageSize) {
      throw new KvIntegrityError(`node tokens (${n.tokens.length}) != pages (${n.pages.length}) * pageSize (${m.pageSize})`);
    }
    if (!n.parent || n.parent.children.get(tree.keyOf(n.tokens, 0)) !== n) throw new KvIntegrityError('a radix node is not under its parent at its first-page key');
    for (const p of n.pages) own(p, 'radix tree');
    let childLocks = 0;
    for (const c of n.children.values()) childLocks += c.lockRef;
    const expected = (directLocks.get(n) ?? 0) + childLocks;
    if (n.lockRef !== expected) throw new KvIntegrityError(`node lockRef (${n.lockRef}) != direct locks + children's lockRef (${expected})`);
    if (n.lockRef > 0) numLocked += n.pages.length;
    else numCached += n.pages.length;
  }

  let numPrivateInUse = 0;
  let numReserved = 0;
  for (const s of m.seqs.values()) {
    if (s.node !== tree.root && s.node.parent === null) throw new KvIntegrityError(`sequence '${s.id}' locks a node that left the tree`);
    const path = tree.pathPages(s.node);
    if (path.length !== s.numPrefixPages) throw new KvIntegrityError(`sequence '${s.id}' prefix pages (${s.numPrefixPages}) != radix path pages (${path.length})`);
    for (let i = 0; i < path.length; i++) {
      if (s.pageIds[i] !== path[i]) throw new KvIntegrityError(`sequence '${s.id}' prefix page ${i} (${s.pageIds[i]}) != radix page (${path[i]})`);
    }
    for (let i = s.numPrefixPages; i < s.pageIds.length; i++) own(s.pageIds[i], `sequence '${s.id}'`);
    const n = s.pageIds.length - s.numPrefixPages;
    if (s.kind === 'reserved') numReserved += n;
    else numPrivateInUse += n;
  }

  const unowned = owner.indexOf(null);
  if (unowned >= 0) throw new KvIntegrityError(`page ${unowned} has no owner (leaked)`);

  const st = m.stats();
  const eq = (name: string, have: number, want: number) => {
    if (have !== want) throw new KvIntegrityError(`${name} (${have}) != recount (${want})`);
  };
  eq('free', st.free, m.freeList.length);
  eq('cached', st.cached, numCached);
  eq('inUse', st.inUse, numLocked + numPrivateInUse);
  eq('reserved', st.reserved, numReserved);
  const sum = st.free + st.cached + st.inUse + st.reserved;
  if (sum !== st.total) {
    throw new KvIntegrityError(`free + cached + inUse + reserved (${st.free} + ${st.cached} + ${st.inUse} + ${st.reserved} = ${sum}) != total (${st.total})`);
  }
}
