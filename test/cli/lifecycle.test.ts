/**
 * The cluster's life through the CLI, real processes: one cluster per MICROSERVE_HOME (a stale run
 * file is replaced, a second `up` is refused naming pid and ports), `up --host/--port`, `status`
 * naming the topology file actually applied, and `microserve down` stopping everything.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cli, cliAsync, freePort, isAlive, startUp, stopUp, tempHome, writeTopology, type UpProcess } from './helpers.ts';

let up: UpProcess;
const home = tempHome();
process.env.MICROSERVE_HOME = home;
const runFile = join(home, 'run.json');

test.after(async () => {
  if (up) await stopUp(up);
});

test('a stale run file (its up is gone) is replaced, its token kept; --host/--port set where the router listens', async () => {
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const deadPid = Number(dead.stdout);
  writeFileSync(runFile, JSON.stringify({ token: 'old', controlUrl: 'ws://127.0.0.1:1', httpUrl: 'http://127.0.0.1:1', pid: deadPid, topology: 'old.yaml' }));
  const port = await freePort();
  up = await startUp(writeTopology(home), home, ['--no-watch', '--host', '127.0.0.1', '--port', String(port)]);
  assert.is(up.httpUrl, `http://127.0.0.1:${port}`);
  const rf = JSON.parse(readFileSync(runFile, 'utf8'));
  assert.is(rf.pid, up.child.pid);
  assert.is(rf.httpUrl, up.httpUrl);
  assert.is(rf.token, 'old', "the stale file's token is kept: agents of the up that died rejoin this one");
  assert.is((await fetch(`${up.httpUrl}/health`)).status, 200);
});

test('a second up on the same home is refused, naming the pid and ports; the first keeps its run file', () => {
  const dir = join(home, 'second');
  mkdirSync(dir, { recursive: true });
  const second = cli(['up', writeTopology(dir), '--no-watch'], home);
  assert.is(second.code, 1);
  assert.match(second.stderr, /error \[CLUSTER_RUNNING\]/);
  assert.ok(second.stderr.includes(`pid ${up.child.pid}`), second.stderr);
  assert.ok(second.stderr.includes(up.httpUrl) && second.stderr.includes(up.controlUrl), second.stderr);
  assert.is(JSON.parse(readFileSync(runFile, 'utf8')).pid, up.child.pid);
  const st = cli(['status', '--json'], home);
  assert.is(st.code, 0, st.stderr);
});

test('status names the topology actually applied', () => {
  const before = JSON.parse(cli(['status', '--json'], home).stdout);
  assert.is(before.topologySource, join(home, 'topology.yaml'));
  const dir = join(home, 'other');
  mkdirSync(dir, { recursive: true });
  const other = writeTopology(dir, { strategy: 'pd', engines: `  - { name: e0, role: prefill, device: cpu, kvPages: 256, threads: 1 }\n  - { name: e1, role: decode, device: cpu, kvPages: 256, threads: 1 }` });
  const r = cli(['apply', other], home);
  assert.is(r.code, 0, r.stderr);
  const after = JSON.parse(cli(['status', '--json'], home).stdout);
  assert.is(after.topologySource, other);
  assert.is(after.strategy, 'pd');
  assert.match(cli(['status'], home).stdout, new RegExp(`\\(${other.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\), strategy pd`));
});

test('down stops up, its engines and supervisors, waits for them, and says what it stopped', async () => {
  const st = JSON.parse(cli(['status', '--json'], home).stdout);
  const enginePids = [...new Set(st.actors.filter((a: any) => a.kind === 'engine').map((a: any) => a.pid))] as number[];
  assert.is(enginePids.length, 2);
  const exited = new Promise((r) => up.child.once('exit', (code) => r(code)));
  const r = await cliAsync(['down'], home); // async: up is our child, and we must reap it while down waits
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`stopped the cluster of up pid ${up.child.pid} \\(router ${up.httpUrl}`));
  assert.match(r.stdout, /engine\/e0\+kv\/e0 \(pid \d+\)/);
  assert.not.match(r.stdout, /SIGKILL/); // a clean stop, no orphans
  // down returned only after everything exited
  assert.not.ok(isAlive(up.child.pid!));
  for (const p of enginePids) assert.not.ok(isAlive(p), `engine pid ${p} still alive`);
  assert.is(await exited, 0);
  assert.not.ok(existsSync(runFile));
  const again = cli(['down'], home);
  assert.is(again.code, 1);
  assert.match(again.stderr, /no cluster is running/);
});

test.run();
