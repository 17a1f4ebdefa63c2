/**
 * Runtime benchmark: remote query round trips/s between two processes (one at a time and
 * pipelined), and MB/s of 4 MiB binary messages (msgpack bin over ws, with bufferutil).
 * Usage: node --import tsx bench/runtime.ts [--seconds 3]   → prints a table, writes bench/results/runtime.md
 */
import { cpus } from 'node:os';
import { writeFileSync, mkdirSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ActorSystem } from '../actors/runtime/system.ts';

const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1]) || 3;
const TOKEN = 'bench-token';
const control = await ActorSystem.start({ nodeId: 'control', token: TOKEN, listen: { host: '127.0.0.1', port: 0 } });
const peerFile = fileURLToPath(new URL('../test/runtime/peer-process.ts', import.meta.url));
const child = spawn(process.execPath, ['--import', 'tsx', peerFile, control.url!, 'bench-peer', 'bench/echo'], {
  env: { ...process.env, MICROSERVE_TOKEN: TOKEN, MICROSERVE_LOG: 'error' },
  stdio: ['ignore', 'pipe', 'inherit'],
});
await new Promise<void>((r) => child.stdout!.on('data', (d) => String(d).includes('ready') && r()));
const caller = await ActorSystem.start({ nodeId: 'bench-caller', token: TOKEN, controlUrl: control.url!, listen: { host: '127.0.0.1', port: 0 } });
const echo = caller.ref('bench/echo');
await echo.query({ type: 'echo' }, 5000); // opens the direct connection

async function timed(fn: () => Promise<number>): Promise<{ ops: number; secs: number }> {
  const t0 = performance.now();
  let ops = 0;
  while (performance.now() - t0 < seconds * 1000) ops += await fn();
  return { ops, secs: (performance.now() - t0) / 1000 };
}

const rows: string[][] = [];
const serial = await timed(async () => (await echo.query({ type: 'echo', v: 1 }, 5000), 1));
rows.push(['query round trips, one at a time', `${(serial.ops / serial.secs).toFixed(0)} /s`, `${((serial.secs / serial.ops) * 1e6).toFixed(0)} µs each`]);
const depth = 64;
const piped = await timed(async () => (await Promise.all(Array.from({ length: depth }, () => echo.query({ type: 'echo', v: 1 }, 5000))), depth));
rows.push([`query round trips, pipelined (${depth} in flight)`, `${(piped.ops / piped.secs).toFixed(0)} /s`, '']);
const blob = new Uint8Array(4 << 20).map((_, i) => i & 255);
const big = await timed(async () => {
  await Promise.all(Array.from({ length: 4 }, () => echo.query({ type: 'echo', data: blob }, 10000)));
  return 4;
});
// each query carries 4 MiB there and 4 MiB back
const mbps = (big.ops * 2 * blob.length) / big.secs / 1e6;
rows.push(['4 MiB binary messages (both directions)', `${mbps.toFixed(0)} MB/s`, `${((big.ops * 2) / big.secs).toFixed(1)} msgs/s`]);

const machine = `${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, Node ${process.version}`;
const date = new Date().toISOString().slice(0, 10);
const md = [`# Runtime benchmark`, '', `Machine: ${machine}. Date: ${date}. Two processes on loopback, ${seconds} s per row.`, '', '| what | rate | note |', '| --- | --- | --- |', ...rows.map((r) => `| ${r.join(' | ')} |`), ''].join('\n');
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(new URL('./results/runtime.md', import.meta.url), md);
process.stdout.write(md + '\n');
child.kill('SIGKILL');
await caller.close();
await control.close();
process.exit(0);
