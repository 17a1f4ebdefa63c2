/**
 * Recovery through the real CLI and real processes: an engine actor kill (it comes back, and
 * `kill --process` still finds it), `/health` degraded rather than down while one engine is
 * away, an apply that cannot start its engine (impossible kvPages) failing fast and rolling
 * back to the previous settings, a crash loop ending `failed` in status and an apply bringing
 * the engine back, and `microserve restart` of a failed control-process actor.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '../../actors/runtime/client.ts';
import type { ActorSystem } from '../../actors/runtime/system.ts';
import type { ActorStatus } from '../../supervisors/cluster-status.ts';
import { cliAsync, sleep, startUp, stopUp, tempHome, writeTopology, type UpProcess } from './helpers.ts';

const home = tempHome();
process.env.MICROSERVE_HOME = home;
const file = writeTopology(home);
let up: UpProcess;
let client: ActorSystem;
const cli = cliAsync;

const row = async (path: string): Promise<ActorStatus> => ((await client.ref('control').query({ type: 'status' }, 20_000)) as { actors: ActorStatus[] }).actors.find((a) => a.path === path)!;

async function until<T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 60_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() - t0 > timeoutMs) assert.unreachable(`${what}: still ${JSON.stringify(v)} after ${timeoutMs} ms`);
    await sleep(150);
  }
}

async function complete(): Promise<string> {
  const r = await fetch(`${up.httpUrl}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'Recovery check', max_tokens: 4, temperature: 0, ignore_eos: true }),
  });
  assert.is(r.status, 200);
  return (await r.json()).choices[0].text;
}

test.before(async () => {
  up = await startUp(file, home, ['--no-watch']);
  client = await connect(up.controlUrl);
});

test.after(async () => {
  await client?.close();
  if (up) await stopUp(up);
});

test('kill engine/e1 (the actor): it comes back, still answers, and kill --process still finds it', async () => {
  const before = await row('engine/e1');
  const r = await cli(['kill', 'engine/e1'], home);
  assert.is(r.code, 0, r.stderr);
  const back = await until('engine/e1 after an actor kill', () => row('engine/e1'), (a) => a.state === 'running' && a.restarts === before.restarts + 1);
  assert.is(back.pid, before.pid, 'an actor kill does not restart the process');
  assert.is(back.lastExit!.reason, 'killed');
  assert.is(JSON.parse((await cli(['send', 'engine/e1', '{"type":"status"}'], home)).stdout).name, 'e1');

  const k = await cli(['kill', 'engine/e1', '--process'], home);
  assert.is(k.code, 0, k.stderr);
  // while e1's process is away, e0 serves: /health stays 200 and names e1 as down
  // (polled until e1 was seen away and back: the first poll may come before anyone noticed the kill)
  const seen = new Set<string>();
  let isAwaySeen = false;
  await until('health while e1 restarts', async () => {
    const h = await fetch(`${up.httpUrl}/health`);
    const body = await h.json();
    seen.add(`${h.status} ${body.status}`);
    const isRunning = (await row('engine/e1')).state === 'running';
    if (!isRunning || body.status !== 'ok') isAwaySeen = true;
    return isAwaySeen && isRunning && h.status === 200 && body.status === 'ok';
  }, (x) => x);
  assert.not.ok([...seen].some((s) => s.startsWith('503')), [...seen].join(', '));
  assert.ok(seen.has('200 degraded'), `degraded never seen: ${[...seen].join(', ')}`);
  const after = await row('engine/e1');
  assert.is.not(after.pid, before.pid);
  assert.match(after.lastExit!.reason, /signal SIGKILL/);
  await complete();
});

test('an apply whose engine cannot start fails within seconds and rolls back to the previous settings', async () => {
  const bad = join(home, 'bad.yaml');
  writeFileSync(bad, readFileSync(file, 'utf8').replace(/(name: e1.*kvPages:) 256/, '$1 100000000'));
  const t0 = Date.now();
  const r = await cli(['apply', bad], home);
  const tookMs = Date.now() - t0;
  assert.is(r.code, 1);
  assert.match(r.stderr, /engine 'e1' exited while starting/);
  assert.ok(tookMs < 30_000, `the apply took ${tookMs} ms`);
  const e1 = await until('e1 with its previous kvPages', () => row('engine/e1'), (a) => a.state === 'running' && a.kv?.total === 256);
  assert.ok(e1.pid! > 0);
  const topo: any = await client.ref('control').query({ type: 'topology' }, 5000);
  assert.is(topo.topology.engines.find((e: any) => e.name === 'e1').kvPages, 256, 'the running topology is the previous one');
  await complete();
});

/**
 * Kills e1's process until its supervisor gives up on it: each new process as soon as it exists (a
 * crash loop crashes while starting), so the six crashes fit the 60 s window on a slow machine too.
 */
async function crashLoopE1(): Promise<void> {
  let lastPid: number | null = null;
  for (let i = 0; ; i++) {
    const a = await until('a new e1 process, or failed', () => row('engine/e1'), (x) => x.state === 'failed' || (x.pid ?? lastPid) !== lastPid);
    if (a.state === 'failed') return;
    assert.ok(i < 10, 'never failed');
    lastPid = a.pid;
    await client.ref('control').query({ type: 'kill', path: 'engine/e1', process: true }, 30_000);
  }
}

test('a crash loop ends failed with the reason in status; applying the (correct) file brings the engine back', async () => {
  await crashLoopE1();
  const failed = await row('engine/e1');
  assert.match(failed.failed!, /crashes within 60000 ms/);
  const st = JSON.parse((await cli(['status', '--json'], home)).stdout);
  assert.is(st.actors.find((a: any) => a.path === 'engine/e1').state, 'failed');
  assert.is((await fetch(`${up.httpUrl}/health`)).status, 200, 'e0 still serves');
  await complete();

  const r = await cli(['apply', file], home); // the same file: desired (e1 running) vs actual (e1 failed)
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /e1/);
  await until('e1 back after the apply', () => row('engine/e1'), (a) => a.state === 'running' && !a.failed && !!a.kv);
});

test('a failed engine removed from the file leaves status and the plan: health ok, not degraded', async () => {
  await crashLoopE1();
  const without = join(home, 'without-e1.yaml');
  writeFileSync(without, readFileSync(file, 'utf8').replace(/ *- \{ name: e1,[^\n]*\n/, ''));
  const r = await cli(['apply', without], home);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /e1/);
  const st = JSON.parse((await cli(['status', '--json'], home)).stdout);
  const paths = st.actors.map((a: any) => a.path);
  assert.not.ok(paths.includes('engine/e1') || paths.includes('kv/e1'), `still listed: ${JSON.stringify(st.actors.filter((a: any) => a.path.endsWith('/e1')))}`);
  assert.ok(st.actors.every((a: any) => a.state === 'running'), JSON.stringify(st.actors.map((a: any) => [a.path, a.state])));
  const h = await until('health ok', () => fetch(`${up.httpUrl}/health`).then(async (x) => ({ code: x.status, body: await x.json() })), (x) => x.body.status === 'ok');
  assert.is(h.code, 200);
  assert.is(h.body.down, undefined, JSON.stringify(h.body));
  await complete();
});

test('microserve restart brings a failed control-process actor back', async () => {
  for (let i = 0; i < 6; i++) await cli(['kill', 'nvshmem'], home);
  const failed = await until('nvshmem failed', () => row('nvshmem'), (a) => a.state === 'failed');
  assert.match(failed.failed!, /6 failures/);
  const r = await cli(['restart', 'nvshmem'], home);
  assert.is(r.code, 0, r.stderr);
  const back = await row('nvshmem');
  assert.is(back.state, 'running');
  assert.is(back.failed, undefined);
  const get = await client.ref('nvshmem').query<any>({ type: 'get', job: 'j' }, 5000);
  assert.is(get.uid, undefined);
});

test.run();
