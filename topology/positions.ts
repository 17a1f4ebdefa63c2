/**
 * Source positions for topology messages: maps a field path (`['engines', 1, 'role']`) to the
 * 1-based line it sits on in the YAML text, using the `yaml` package's node ranges.
 */
import { isMap, isScalar, isSeq, type Document, type LineCounter } from 'yaml';

export type FieldPath = readonly PropertyKey[];

/** `['engines', 1, 'role']` → `engines[1].role`; `[]` → `(top level)`. */
export function formatPath(path: FieldPath): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out || '(top level)';
}

export class Positions {
  constructor(
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  /**
   * Line of the node at `path`; when the path does not exist (a missing field), the line of its
   * deepest existing parent. With `isKey`, the line of the last segment's key rather than its value.
   */
  line(path: FieldPath, isKey = false): number {
    let node: unknown = this.doc.contents;
    let offset = rangeStart(node);
    for (let i = 0; i < path.length; i++) {
      const seg = path[i];
      if (isMap(node)) {
        const pair = node.items.find((it) => (isScalar(it.key) ? it.key.value : it.key) === seg);
        if (!pair) break;
        if (isKey && i === path.length - 1) return this.lineAt(rangeStart(pair.key) ?? offset);
        node = pair.value;
        offset = rangeStart(pair.value) ?? rangeStart(pair.key) ?? offset;
      } else if (isSeq(node) && typeof seg === 'number') {
        const item = node.items[seg];
        if (item === undefined) break;
        node = item;
        offset = rangeStart(item) ?? offset;
      } else break;
    }
    return this.lineAt(offset);
  }

  private lineAt(offset: number | undefined): number {
    return offset === undefined ? 1 : this.lines.linePos(offset).line;
  }
}

function rangeStart(node: unknown): number | undefined {
  const r = (node as { range?: [number, number, number] } | null | undefined)?.range;
  return r ? r[0] : undefined;
}
