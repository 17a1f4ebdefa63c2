#!/usr/bin/env node
// Runs every test/**/*.test.ts in its own Node process (a native crash or a hang stays in its
// file), sums uvu's counts, and ends with the line `N passed, N failed` that CI reads.
// Usage: node bin/run-tests.js [filter-substring ...]
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const filters = process.argv.slice(2);
const FILE_TIMEOUT_MS = Number(process.env.MICROSERVE_TEST_TIMEOUT_MS ?? 15 * 60 * 1000);

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      if (name !== 'fixtures') out.push(...walk(p));
    } else if (/\.test\.ts$/.test(name)) out.push(p);
  }
  return out;
}

const files = walk(join(root, 'test'))
  .map((f) => relative(root, f))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();

let passed = 0;
let failed = 0;
let skipped = 0;
const failures = [];
for (const file of files) {
  const t0 = Date.now();
  process.stdout.write(`\n=== ${file}\n`);
  const { code, out } = await new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', file], {
      cwd: root,
      env: { ...process.env, MICROSERVE_LOG: process.env.MICROSERVE_LOG ?? 'error' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      process.stdout.write(d);
    });
    child.stderr.on('data', (d) => process.stderr.write(d));
    const timer = setTimeout(() => {
      out += `\n(timed out after ${FILE_TIMEOUT_MS} ms)\n`;
      child.kill('SIGKILL');
    }, FILE_TIMEOUT_MS);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
  const plain = out.replace(/\x1b\[[0-9;]*m/g, '');
  const num = (label) => [...plain.matchAll(new RegExp(`${label}:\\s+(\\d+)`, 'g'))].reduce((a, m) => a + Number(m[1]), 0);
  const total = num('Total');
  const p = num('Passed');
  const s = num('Skipped');
  let f = total - p - s;
  if (code !== 0 && f === 0) f = 1; // crashed, hung, or failed outside a test
  passed += p;
  failed += f;
  skipped += s;
  if (f > 0) failures.push(file);
  process.stdout.write(`--- ${file}: ${p} passed, ${f} failed, ${s} skipped (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
}
if (failures.length) process.stdout.write(`\nfailed files:\n  ${failures.join('\n  ')}\n`);
process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
process.exit(failed > 0 ? 1 : 0);
