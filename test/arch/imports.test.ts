// The import picture of the library folders: no cycles between files, and no arrow from a lower
// layer to a higher one. Layers, lowest first (a file may import its own group and any lower
// layer, never a higher one nor a sibling group of its own layer):
//   0 common/ — errors, log, environment knobs, transport names
//   1 native/ — the addon and its TypeScript face
//   2 actors/runtime/, actors/text/, actors/messages.ts — carrying messages, tokenizers, the vocabulary of messages
//   3 actors/kvcache/   4 actors/engine/   5 actors/router/
//   6 topology/   7 supervisors/   7.5 bench/ (the `microserve bench` runner; a target only)   8 bin/
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FOLDERS = ['common', 'native', 'actors', 'topology', 'supervisors', 'bin'];

const LAYERS: [prefix: string, layer: number][] = [
  ['common/', 0],
  ['native/', 1],
  ['actors/runtime/', 2],
  ['actors/text/', 2],
  ['actors/messages.ts', 2],
  ['actors/kvcache/', 3],
  ['actors/engine/', 4],
  ['actors/router/', 5],
  ['topology/', 6],
  ['supervisors/', 7],
  ['bin/', 8],
  ['bench/', 7.5],
];

function group(file: string): [string, number] {
  const hit = LAYERS.find(([p]) => file.startsWith(p));
  if (!hit) throw new Error(`${file}: in no layer (add it to LAYERS)`);
  return hit;
}

function tsFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((name) => {
    const rel = join(dir, name);
    if (name === 'node_modules' || name === 'build' || name.startsWith('.')) return [];
    if (statSync(join(ROOT, rel)).isDirectory()) return tsFiles(rel);
    return rel.endsWith('.ts') && !rel.endsWith('.d.ts') ? [rel] : [];
  });
}

/** Relative imports (static, re-exports, dynamic with a literal) of a file, as root-relative paths. */
function importsOf(file: string): string[] {
  const src = readFileSync(join(ROOT, file), 'utf8');
  const out: string[] = [];
  for (const m of src.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g)) {
    out.push(relative(ROOT, resolve(ROOT, dirname(file), m[1] ?? m[2])));
  }
  return out;
}

const files = FOLDERS.flatMap(tsFiles);
const graph = new Map(files.map((f) => [f, importsOf(f)]));

/** Strongly connected components of more than one file (Tarjan). */
function cycles(): string[][] {
  let index = 0;
  const idx = new Map<string, number>(), low = new Map<string, number>(), onStack = new Set<string>(), stack: string[] = [];
  const out: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index), low.set(v, index++), stack.push(v), onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) visit(w), low.set(v, Math.min(low.get(v)!, low.get(w)!));
      else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do (w = stack.pop()!), onStack.delete(w), scc.push(w);
      while (w !== v);
      if (scc.length > 1) out.push(scc.sort());
    }
  };
  for (const f of files) if (!idx.has(f)) visit(f);
  return out;
}

test('the parser sees the imports (a file known to import two others)', () => {
  const deps = graph.get('actors/router/strategy-loader.ts') ?? [];
  assert.ok(deps.includes('common/errors.ts'), deps.join(', '));
  assert.ok(deps.includes('actors/router/strategies/index.ts'), deps.join(', '));
  assert.ok(files.length > 80, `only ${files.length} files found`);
});

test('every import resolves to a file', () => {
  const missing = [...graph].flatMap(([f, deps]) => deps.filter((d) => !statSync(join(ROOT, d), { throwIfNoEntry: false })).map((d) => `${f} -> ${d}`));
  assert.equal(missing, []);
});

test('no arrow from a lower layer to a higher one, nor sideways between groups of one layer', () => {
  const bad: string[] = [];
  for (const [f, deps] of graph) {
    const [g, layer] = group(f);
    for (const d of deps) {
      const [dg, dl] = group(d);
      if (dl > layer || (dl === layer && dg !== g)) bad.push(`${f} (layer ${layer}) -> ${d} (layer ${dl})`);
    }
  }
  assert.equal(bad, []);
});

test('no import cycles', () => {
  assert.equal(cycles().map((c) => c.join(' <-> ')), []);
});

test('only common/env.ts reads MICROSERVE_* / MS_* knobs from process.env', () => {
  const readers = files.filter((f) => f !== 'common/env.ts' && /process\.env(\.(MICROSERVE|MS)_|\[\s*['"](MICROSERVE|MS)_)/.test(readFileSync(join(ROOT, f), 'utf8')));
  assert.equal(readers, []);
});

test.run();
