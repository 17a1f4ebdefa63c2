import { mkdtempSync, renameSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { watchTopology, type TopologyChange } from '../../topology/watch.ts';

const yaml = (strategy: string) => `model: tiny\nrouter: { strategy: ${strategy} }\nengines:\n  - { name: e0 }\n  - { name: e1 }\n`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'watch-'));
  const file = join(dir, 'topology.yaml');
  writeFileSync(file, yaml('dp'));
  const changes: TopologyChange[] = [];
  let waiter: (() => void) | null = null;
  const w = watchTopology(
    file,
    (c) => {
      changes.push(c);
      waiter?.();
    },
    { numGpus: 0, debounceMs: 20, pollMs: 200 },
  );
  /** Resolves when `n` changes have been reported (fails after 3 s). */
  const until = async (n: number) => {
    const t0 = Date.now();
    while (changes.length < n) {
      if (Date.now() - t0 > 3000) throw new Error(`only ${changes.length} of ${n} changes reported`);
      await new Promise<void>((r) => {
        waiter = r;
        setTimeout(r, 50);
      });
    }
  };
  return { dir, file, changes, w, until };
}

test('an in-place write is reported once, parsed', async () => {
  const s = setup();
  try {
    writeFileSync(s.file, yaml('pd'));
    await s.until(1);
    await sleep(300);
    assert.is(s.changes.length, 1);
    const c = s.changes[0];
    assert.ok(c.isValid && c.topology.router.strategy === 'pd');
    assert.is(s.w.hash, c.hash);
  } finally {
    s.w.close();
  }
});

test('rename-replace saves (vim, VS Code) keep being seen', async () => {
  const s = setup();
  try {
    for (const [i, strategy] of ['pd', 'balanced-pd', 'dp'].entries()) {
      const tmp = join(s.dir, `.topology.yaml.${i}.swp`);
      writeFileSync(tmp, yaml(strategy));
      renameSync(tmp, s.file);
      await s.until(i + 1);
    }
    assert.equal(
      s.changes.map((c) => (c.isValid ? c.topology.router.strategy : 'invalid')),
      ['pd', 'balanced-pd', 'dp'],
    );
  } finally {
    s.w.close();
  }
});

test('touching or rewriting the same bytes reports nothing; other files in the folder are ignored', async () => {
  const s = setup();
  try {
    utimesSync(s.file, new Date(), new Date(Date.now() + 5000));
    writeFileSync(s.file, yaml('dp'));
    writeFileSync(join(s.dir, 'other.yaml'), yaml('pd'));
    await sleep(500); // longer than the debounce and two polls
    assert.is(s.changes.length, 0);
  } finally {
    s.w.close();
  }
});

test('an invalid file is reported with its error, and a fix after it is reported too', async () => {
  const s = setup();
  try {
    writeFileSync(s.file, yaml('dp').replace('{ name: e1 }', '{ name: e1, role: decoder }'));
    await s.until(1);
    const bad = s.changes[0];
    assert.ok(!bad.isValid);
    assert.is(!bad.isValid && bad.error.code, 'TOPOLOGY_INVALID');
    assert.match(!bad.isValid ? bad.error.message : '', /^engines\[1\]\.role: unknown role 'decoder' .* at line 5$/);
    writeFileSync(s.file, yaml('dp'));
    await s.until(2);
    assert.ok(s.changes[1].isValid);
  } finally {
    s.w.close();
  }
});

test('a slow handler is not re-entered; changes meanwhile coalesce', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'watch-'));
  const file = join(dir, 't.yaml');
  writeFileSync(file, yaml('dp'));
  const seen: string[] = [];
  let active = 0;
  let maxActive = 0;
  const w = watchTopology(
    file,
    async (c) => {
      active++;
      maxActive = Math.max(maxActive, active);
      seen.push(c.isValid ? c.topology.router.strategy : 'invalid');
      await sleep(200);
      active--;
    },
    { numGpus: 0, debounceMs: 10, pollMs: 0 },
  );
  try {
    writeFileSync(file, yaml('pd'));
    await sleep(60);
    writeFileSync(file, yaml('migrate'));
    await sleep(30);
    writeFileSync(file, yaml('dp-prefix'));
    await sleep(800);
    assert.equal(seen, ['pd', 'dp-prefix']);
    assert.is(maxActive, 1);
  } finally {
    w.close();
  }
});

test.run();
