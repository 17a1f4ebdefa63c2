/**
 * Radix tree over token ids at page granularity: every edge holds whole pages (its `tokens` are
 * `pages.length * pageSize` long), so only full pages are ever shared. Nodes carry a lock count
 * (a node is locked when any sequence's prefix runs through it: locking a node locks its
 * ancestors) and an access clock for LRU eviction of unlocked leaves.
 *
 * The tree counts its pages by state: `numCachedPages` (in nodes with lockRef 0) and
 * `numLockedPages` (lockRef > 0). A node with lockRef 0 has only unlocked descendants, so every
 * cached page is evictable by trimming leaves.
 *
 * Eviction candidates are kept between calls in one min-heap by last access: a leaf is pushed
 * when it may have become evictable (inserted, unlocked to 0, its last child evicted) or was
 * accessed; an entry whose node has since been locked, grown children, left the tree or been
 * accessed again is stale and skipped when popped. An eviction therefore costs O(log n) per
 * leaf it takes, not a walk of the whole tree (a full pool under load evicts in most steps).
 */
import { MinHeap } from './min-heap.ts';

export class RadixNode {
  parent: RadixNode | null;
  readonly children = new Map<string, RadixNode>();
  /** (pages.length * pageSize) token ids. */
  tokens: number[];
  pages: number[];
  lockRef = 0;
  lastAccess = 0;

  constructor(parent: RadixNode | null, tokens: number[], pages: number[]) {
    this.parent = parent;
    this.tokens = tokens;
    this.pages = pages;
  }
}

/** A heap entry: `node` as it was when pushed (`lastAccess`), stale once that changed. */
interface Candidate {
  node: RadixNode;
  lastAccess: number;
}

/** Where a lookup stopped: `node` holds the last matched page (its first `nodePages` pages matched). */
interface Walk {
  numPages: number;
  pageIds: number[];
  node: RadixNode;
  nodePages: number;
}

export class RadixTree {
  readonly root = new RadixNode(null, [], []);
  numCachedPages = 0;
  numLockedPages = 0;
  /** Nodes in the tree, the root excluded. */
  numNodes = 0;
  private clock = 0;
  private candidates = new MinHeap<Candidate>((a, b) => a.lastAccess - b.lastAccess);

  constructor(readonly pageSize: number) {}

  /** Child key: the tokens of page `page` of `tokens`. */
  keyOf(tokens: ArrayLike<number>, page: number): string {
    let s = '';
    const base = page * this.pageSize;
    for (let i = 0; i < this.pageSize; i++) s += tokens[base + i] + ',';
    return s;
  }

  /** Longest cached prefix of `tokens` in whole pages, at most `maxPages`. Changes nothing. */
  match(tokens: ArrayLike<number>, maxPages: number): Walk {
    let node = this.root;
    let i = 0;
    const pageIds: number[] = [];
    while (i < maxPages) {
      const child = node.children.get(this.keyOf(tokens, i));
      if (!child) break;
      const k = this.commonPages(child, tokens, i, maxPages - i);
      for (let j = 0; j < k; j++) pageIds.push(child.pages[j]);
      i += k;
      if (k < child.pages.length) return { numPages: i, pageIds, node: child, nodePages: k };
      node = child;
    }
    return { numPages: i, pageIds, node, nodePages: node.pages.length };
  }

  /** Like `match`, but splits so the returned node ends exactly at the match, and touches the path. */
  matchAndSplit(tokens: ArrayLike<number>, maxPages: number): { node: RadixNode; pageIds: number[] } {
    const w = this.match(tokens, maxPages);
    const node = w.nodePages < w.node.pages.length ? this.split(w.node, w.nodePages) : w.node;
    this.touch(node);
    return { node, pageIds: w.pageIds };
  }

  /**
   * Adds `tokens` (pages.length full pages) with their pages. Pages whose tokens are already cached
   * under another page id are returned as duplicates; pages already in the tree (same id) are kept.
   */
  insert(tokens: ArrayLike<number>, pages: number[]): { numNewPages: number; duplicatePageIds: number[] } {
    let node = this.root;
    let i = 0;
    const duplicatePageIds: number[] = [];
    let numNewPages = 0;
    const t = ++this.clock;
    while (i < pages.length) {
      const key = this.keyOf(tokens, i);
      let child = node.children.get(key);
      if (!child) {
        const fresh = new RadixNode(node, Array.from(tokens).slice(i * this.pageSize, pages.length * this.pageSize), pages.slice(i));
        fresh.lastAccess = t;
        node.children.set(key, fresh);
        this.numNodes++;
        numNewPages = pages.length - i;
        this.numCachedPages += numNewPages;
        this.offer(fresh);
        break;
      }
      const k = this.commonPages(child, tokens, i, pages.length - i);
      if (k < child.pages.length && i + k < pages.length) child = this.split(child, k);
      for (let j = 0; j < k; j++) if (child.pages[j] !== pages[i + j]) duplicatePageIds.push(pages[i + j]);
      child.lastAccess = t;
      this.offer(child);
      node = child;
      i += k;
    }
    return { numNewPages, duplicatePageIds };
  }

  /** Locks `node` and its ancestors; their pages count as locked while any lock holds. */
  lock(node: RadixNode): void {
    for (let n: RadixNode | null = node; n && n !== this.root; n = n.parent) {
      if (n.lockRef === 0) {
        this.numCachedPages -= n.pages.length;
        this.numLockedPages += n.pages.length;
      }
      n.lockRef++;
    }
  }

  unlock(node: RadixNode): void {
    for (let n: RadixNode | null = node; n && n !== this.root; n = n.parent) {
      if (n.lockRef <= 0) throw new Error('radix unlock of an unlocked node');
      n.lockRef--;
      if (n.lockRef === 0) {
        this.numLockedPages -= n.pages.length;
        this.numCachedPages += n.pages.length;
        this.offer(n);
      }
    }
  }

  /**
   * Evicts up to `numPages` cached pages, least recently used leaves first, trimming a leaf's tail
   * pages when fewer than the whole leaf are needed. Returns the freed page ids.
   */
  evict(numPages: number): number[] {
    const freed: number[] = [];
    while (freed.length < numPages && this.candidates.size > 0) {
      const { node: leaf, lastAccess } = this.candidates.pop()!;
      if (leaf.parent === null || leaf.lastAccess !== lastAccess || !this.isEvictable(leaf) || leaf.pages.length === 0) continue;
      const key = this.keyOf(leaf.tokens, 0);
      const take = Math.min(numPages - freed.length, leaf.pages.length);
      for (const p of leaf.pages.splice(leaf.pages.length - take, take)) freed.push(p);
      leaf.tokens.length = leaf.pages.length * this.pageSize;
      this.numCachedPages -= take;
      if (leaf.pages.length > 0) {
        this.candidates.push({ node: leaf, lastAccess }); // still the least recently used
        continue;
      }
      const parent = leaf.parent;
      parent.children.delete(key);
      leaf.parent = null;
      this.numNodes--;
      this.offer(parent);
    }
    return freed;
  }

  /** Queues `n` for eviction if it is an evictable leaf now; rebuilds the heap when stale entries dominate. */
  private offer(n: RadixNode): void {
    if (!this.isEvictable(n)) return;
    this.candidates.push({ node: n, lastAccess: n.lastAccess });
    if (this.candidates.size > 2 * this.numNodes + 1024) {
      this.candidates = new MinHeap<Candidate>((a, b) => a.lastAccess - b.lastAccess);
      for (const m of this.nodes()) if (this.isEvictable(m)) this.candidates.push({ node: m, lastAccess: m.lastAccess });
    }
  }

  /** Every node except the root, depth first. */
  *nodes(): Generator<RadixNode> {
    const stack = [...this.root.children.values()];
    while (stack.length > 0) {
      const n = stack.pop()!;
      yield n;
      for (const c of n.children.values()) stack.push(c);
    }
  }

  /** Pages on the path root → node, in position order. */
  pathPages(node: RadixNode): number[] {
    const parts: number[][] = [];
    for (let n: RadixNode | null = node; n && n !== this.root; n = n.parent) parts.push(n.pages);
    return parts.reverse().flat();
  }

  private isEvictable(n: RadixNode): boolean {
    return n !== this.root && n.lockRef === 0 && n.children.size === 0;
  }

  /** Leading pages of `child` equal to `tokens` from page `from`, at most `max` (≥ 1 when keyed). */
  private commonPages(child: RadixNode, tokens: ArrayLike<number>, from: number, max: number): number {
    const ps = this.pageSize;
    const limit = Math.min(child.pages.length, max);
    let k = 0;
    outer: for (; k < limit; k++) {
      const a = k * ps;
      const b = (from + k) * ps;
      for (let j = 0; j < ps; j++) if (child.tokens[a + j] !== tokens[b + j]) break outer;
    }
    return k;
  }

  /** Splits `node` after `k` pages (0 < k < pages): a new parent takes the first k. Returns it. */
  private split(node: RadixNode, k: number): RadixNode {
    const ps = this.pageSize;
    const parent = node.parent!;
    const key = this.keyOf(node.tokens, 0);
    const mid = new RadixNode(parent, node.tokens.slice(0, k * ps), node.pages.slice(0, k));
    this.numNodes++;
    mid.lockRef = node.lockRef; // every lock through node also runs through mid
    mid.lastAccess = node.lastAccess;
    node.tokens = node.tokens.slice(k * ps);
    node.pages = node.pages.slice(k);
    node.parent = mid;
    parent.children.set(key, mid);
    mid.children.set(this.keyOf(node.tokens, 0), node);
    return mid;
  }

  private touch(node: RadixNode): void {
    const t = ++this.clock;
    for (let n: RadixNode | null = node; n && n !== this.root; n = n.parent) n.lastAccess = t;
  }
}
