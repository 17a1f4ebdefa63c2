/**
 * Chaos: a real `microserve up` (tiny preset, two CPU engines, an agent host) serves 20 concurrent
 * greedy streams issued continuously for 60 s while, every 2 s, a part of the cluster is killed:
 * the router, control, nvshmem and supervisor actors, the engine and KV-view actors, the engine
 * processes (SIGKILL), the agent's supervisor and keeper actors and the agent's process (SIGKILL,
 * `kill supervisor/h2 --process`: its keeper restarts it). Victims come from a seeded shuffle, one
 * round through all of them before any repeats (so no part is killed often enough to reach the
 * restart policy's give-up: that case has its own tests).
 *
 * Done when: 0 failed requests, every stream equal to its undisturbed greedy run (references
 * computed first), 0 leaked KV pages (each engine's integrity check, nothing in use or reserved
 * once idle), and every killed part back (`running`, restarted) in `status`.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { connect } from '../../actors/runtime/client.ts';
import type { ActorSystem } from '../../actors/runtime/system.ts';
import type { ActorStatus } from '../../supervisors/cluster-status.ts';
import { xorshift } from '../shared/xorshift.ts';
import { CLI, ROOT, freePort, sleep, startUp, stopUp, tempHome, writeTopology, type UpProcess } from './helpers.ts';
import { streamGreedy } from '../shared/sse.ts';

const DURATION_MS = 60_000;
const KILL_EVERY_MS = 2000;
const NUM_STREAMS = 20;
const MAX_TOKENS = 16;
const PROMPTS = Array.from({ length: 10 }, (_, i) => `Chaos prompt ${i}: tell me a story about the number ${i * 7 + 3} and its friends.`);

interface Victim {
  path: string;
  isProcess: boolean;
}
const VICTIMS: Victim[] = [
  ...['router', 'control', 'nvshmem', 'supervisor/local', 'supervisor/h2', 'keeper/h2', 'engine/e0', 'engine/e1', 'kv/e0', 'kv/e1'].map((path) => ({ path, isProcess: false })),
  { path: 'engine/e0', isProcess: true },
  { path: 'kv/e1', isProcess: true },
  // the agent's OS process (SIGKILL): its keeper restarts it
  { path: 'supervisor/h2', isProcess: true },
];

const stream = (url: string, prompt: string) => streamGreedy(url, prompt, MAX_TOKENS);

async function actors(client: ActorSystem): Promise<ActorStatus[]> {
  return ((await client.ref('control').query({ type: 'status' }, 30_000)) as { actors: ActorStatus[] }).actors;
}

let up: UpProcess;
let agent: ChildProcess;
let client: ActorSystem;

test.before(async () => {
  const home = tempHome();
  const token = 'chaos-test-token-0123456789';
  process.env.MICROSERVE_TOKEN = token;
  process.env.MICROSERVE_HOME = home;
  const port = await freePort();
  const file = writeTopology(home, { name: 'chaos.yaml', transport: 'host', controlPort: port, hosts: ['h2'] });
  up = await startUp(file, home, ['--no-watch'], 180_000);
  agent = spawn(process.execPath, [CLI, 'agent', '--connect', `ws://127.0.0.1:${port}`, '--host', 'h2'], {
    cwd: ROOT,
    env: { ...process.env, MICROSERVE_LOG: 'error' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  client = await connect(up.controlUrl);
  const t0 = Date.now();
  while (!(await actors(client)).some((a) => a.path === 'supervisor/h2' && a.state === 'running')) {
    if (Date.now() - t0 > 60_000) throw new Error('the agent did not join');
    await sleep(200);
  }
});

test.after(async () => {
  await client?.close();
  if (agent && agent.exitCode === null && agent.signalCode === null) {
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
  }
  if (up) await stopUp(up);
});

test('60 s of kills every 2 s under 20 continuous streams: no failed request, streams exact, no leaked page, every part back', async () => {
  const reference = new Map<string, number[]>();
  for (const p of PROMPTS) {
    const r = await stream(up.httpUrl, p);
    assert.is(r.finish, 'length', r.error);
    reference.set(p, r.ids);
  }

  const rand = xorshift(15);
  const killed: Victim[] = [];
  const log: string[] = [];
  let round: Victim[] = [];
  const t0 = Date.now();
  let isRunning = true;
  const killer = (async () => {
    while (Date.now() - t0 < DURATION_MS) {
      await sleep(KILL_EVERY_MS);
      if (round.length === 0) round = VICTIMS.map((v) => ({ v, k: rand() })).sort((a, b) => a.k - b.k).map((x) => x.v);
      // the next victim of this round that is up now (a part still coming back is not killed again yet)
      const st = await actors(client);
      const i = round.findIndex((v) => st.some((a) => a.path === v.path && a.state === 'running'));
      if (i < 0) continue;
      const [v] = round.splice(i, 1);
      await client.ref('control').query({ type: 'kill', path: v.path, process: v.isProcess }, 30_000);
      killed.push(v);
      log.push(`${((Date.now() - t0) / 1000).toFixed(1)}s kill ${v.path}${v.isProcess ? ' --process' : ''}`);
    }
    isRunning = false;
  })();

  const failures: string[] = [];
  let numDone = 0;
  await Promise.all(
    Array.from({ length: NUM_STREAMS }, async (_, w) => {
      for (let k = 0; isRunning; k++) {
        const prompt = PROMPTS[(w + k) % PROMPTS.length];
        const ts = ((Date.now() - t0) / 1000).toFixed(1);
        const r = await stream(up.httpUrl, prompt).catch((e) => ({ ids: [], finish: null, error: String(e) }));
        numDone++;
        const te = ((Date.now() - t0) / 1000).toFixed(1);
        if (r.error || r.finish !== 'length') failures.push(`stream ${w}/${k} (${ts}-${te}s): ${r.error ?? `finish ${r.finish}`}`);
        else if (JSON.stringify(r.ids) !== JSON.stringify(reference.get(prompt))) failures.push(`stream ${w}/${k} (${ts}-${te}s): ${JSON.stringify(r.ids)} != ${JSON.stringify(reference.get(prompt))}`);
      }
    }),
  );
  await killer;
  assert.equal(failures, [], `${failures.length} of ${numDone} requests failed; kills: ${log.join(', ')}`);
  assert.ok(numDone >= NUM_STREAMS * 2, `only ${numDone} requests completed`);
  assert.ok(killed.length >= 20, `only ${killed.length} kills`);

  // every killed part back in status: running, counted as restarted, nothing failed
  let st: ActorStatus[] = [];
  const tb = Date.now();
  for (;;) {
    st = await actors(client);
    const isBack = killed.every((v) => st.some((a) => a.path === v.path && a.state === 'running' && a.restarts > 0 && !a.failed));
    if (isBack && st.every((a) => a.state === 'running')) break;
    if (Date.now() - tb > 60_000) assert.unreachable(`not back after 60 s: ${JSON.stringify(st.filter((a) => a.state !== 'running' || a.restarts === 0).map((a) => [a.path, a.state, a.restarts]))}`);
    await sleep(250);
  }

  // no leaked KV page: integrity holds and, idle, nothing is in use or reserved
  for (const e of ['e0', 'e1']) {
    const t = Date.now();
    for (;;) {
      const kv = (await client.ref(`kv/${e}`).query({ type: 'check' }, 10_000)) as { ok: boolean; stats: { inUse: number; reserved: number } };
      assert.ok(kv.ok);
      if (kv.stats.inUse === 0 && kv.stats.reserved === 0) break;
      if (Date.now() - t > 30_000) assert.unreachable(`kv/${e} leaks pages: ${JSON.stringify(kv.stats)}`);
      await sleep(200);
    }
  }
});

test.run();
