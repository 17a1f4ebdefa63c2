/**
 * Control-plane fuzz against a real `microserve up` (tiny preset, CPU): an authenticated client
 * sends 1000 malformed frames of every frame kind (each on its own connection, which control must
 * close with 4400 or 1009) and malformed messages to every actor kind (each refused with
 * BAD_MESSAGE), an agent's supervisor and proc actor included. Afterwards `up`, the agent and every
 * actor are alive with the same pids, nothing restarted, the KV accounting is whole, and
 * completions are served.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import WebSocket from 'ws';
import { isMicroserveError } from '../../common/errors.ts';
import { connect } from '../../actors/runtime/client.ts';
import { readRunFile } from '../../actors/runtime/token.ts';
import type { ClusterStatus } from '../../supervisors/cluster.ts';
import { xorshift } from '../shared/xorshift.ts';
import { AGENT_HOST, badFrame, badMessage, MESSAGE_TEMPLATES, type BadFrame } from './fuzz-cases.ts';
import { CLI, cli, isAlive, ROOT, sleep, startUp, stopUp, tempHome, writeTopology, type UpProcess } from './helpers.ts';

const NUM_FRAMES = 1000;
const MESSAGES_PER_ACTOR = 40;
const SEED = Number(process.env.FUZZ_SEED ?? 15);

let up: UpProcess;
let agent: ChildProcess;
const home = tempHome();
process.env.MICROSERVE_HOME = home;

test.before(async () => {
  const file = writeTopology(home);
  appendFileSync(file, `hosts: [{ name: ${AGENT_HOST} }]\n`);
  // up logs each connection it closes for a bad frame at warn: the first test reads that log
  // (`node bin/run-tests.js` runs everything with MICROSERVE_LOG=error)
  const level = process.env.MICROSERVE_LOG;
  process.env.MICROSERVE_LOG = 'warn';
  try {
    up = await startUp(file, home, ['--no-watch']);
  } finally {
    if (level === undefined) delete process.env.MICROSERVE_LOG;
    else process.env.MICROSERVE_LOG = level;
  }
  // an agent host (no engines placed on it): its supervisor/<host> and proc/agent-<host> get fuzzed too
  agent = spawn(process.execPath, [CLI, 'agent', '--connect', up.controlUrl, '--host', AGENT_HOST], {
    cwd: ROOT,
    env: { ...process.env, MICROSERVE_TOKEN: readRunFile()!.token, MICROSERVE_LOG: 'error' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const t0 = Date.now();
  while (!(await clusterStatus()).actors.some((a) => a.path === `supervisor/${AGENT_HOST}` && a.state === 'running')) {
    if (Date.now() - t0 > 60_000) throw new Error('the agent did not join');
    await sleep(200);
  }
});

test.after(async () => {
  if (agent && agent.exitCode === null) {
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
  }
  await stopUp(up);
});

async function clusterStatus(): Promise<ClusterStatus> {
  const r = cli(['status', '--json'], home);
  assert.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

const pidsOf = (st: ClusterStatus) => Object.fromEntries(st.actors.map((a) => [a.path, `${a.pid}/${a.state}/${a.restarts}`]));

/** Sends one bad frame on a fresh authenticated connection; resolves with how it closed. */
function sendBad(url: string, token: string, f: BadFrame, nodeId: string): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
    const timer = setTimeout(() => {
      ws.terminate();
      resolve({ code: -1, reason: 'not closed within 15 s' });
    }, 15_000);
    ws.on('open', () => {
      if (f.hello) ws.send(Buffer.from(encodeHello(nodeId)));
      ws.send(f.data, { binary: typeof f.data !== 'string' });
    });
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString() });
    });
    ws.on('error', () => undefined);
  });
}

let packHello: ((id: string) => Buffer) | null = null;
function encodeHello(nodeId: string): Buffer {
  return packHello!(nodeId);
}

test('1000 malformed frames of every kind: each closes only its own connection, with a typed reason', async () => {
  const { encodeFrame } = await import('../../actors/runtime/frames.ts');
  packHello = (id) => encodeFrame({ k: 'hello', nodeId: id, url: null, paths: [], join: true });
  const before = await clusterStatus();
  const token = readRunFile()!.token;
  const r = xorshift(SEED);
  const frames = Array.from({ length: NUM_FRAMES }, (_, i) => badFrame(r, i, `fuzz-${i}`));
  const results: { f: BadFrame; code: number; reason: string }[] = [];
  for (let i = 0; i < frames.length; i += 8) {
    const batch = frames.slice(i, i + 8);
    const closed = await Promise.all(batch.map((f, j) => sendBad(up.controlUrl, token, f, `fuzz-${i + j}`)));
    closed.forEach((c, j) => results.push({ f: batch[j], ...c }));
  }
  const wrong = results.filter((x) => !(x.code === 4400 && x.reason.startsWith('BAD_FRAME ')) && x.code !== 1009);
  assert.is(wrong.length, 0, wrong.slice(0, 5).map((x) => `${x.f.what}: ${x.code} ${x.reason}`).join('\n'));
  const kinds = new Set(results.map((x) => x.f.what.split(/[ .]/)[0]));
  for (const k of ['hello', 'welcome', 'reg', 'dir', 'env', 'reply']) assert.ok(kinds.has(k), `no mutated '${k}' frame in the run`);
  assert.match(up.output(), /closing connection: bad frame/); // logged by control
  assert.equal(pidsOf(await clusterStatus()), pidsOf(before));
});

test('malformed messages to every actor kind: BAD_MESSAGE naming the field; the issue\'s start {spec: 5} too', async () => {
  const before = await clusterStatus();
  const c = await connect(up.controlUrl);
  const r = xorshift(SEED + 1);
  const unexpected: string[] = [];
  try {
    for (const path of Object.keys(MESSAGE_TEMPLATES)) {
      for (let i = 0; i < MESSAGES_PER_ACTOR; i++) {
        const msg = badMessage(r, path);
        try {
          await c.ref(path).query(msg, 10_000);
          unexpected.push(`${path} accepted ${JSON.stringify(msg)}`);
        } catch (e) {
          const code = isMicroserveError(e) ? e.code : 'untyped';
          // a wrong-typed apply.topology that is still a map reaches the topology parser
          const ok = code === 'BAD_MESSAGE' || (path === 'control' && msg.type === 'apply' && code === 'TOPOLOGY_INVALID');
          if (!ok) unexpected.push(`${path} ${JSON.stringify(msg)}: ${code} ${(e as Error).message}`);
        }
      }
    }
  } finally {
    await c.close();
  }
  assert.is(unexpected.length, 0, unexpected.slice(0, 5).join('\n'));
  const bad = cli(['send', 'supervisor/local', '{"type":"start","spec":5}'], home);
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /error \[BAD_MESSAGE\]: supervisor\/local: start\.spec: /);
  assert.equal(pidsOf(await clusterStatus()), pidsOf(before)); // status keeps working, nothing restarted
});

test('afterwards: up and every actor alive with the same pids, KV whole, completions served', async () => {
  const st = await clusterStatus();
  for (const a of st.actors) {
    assert.is(a.state, 'running', a.path);
    assert.is(a.restarts, 0, a.path);
    assert.ok(a.pid && isAlive(a.pid), `${a.path} pid ${a.pid}`);
  }
  assert.ok(st.actors.some((a) => a.path === 'router') && st.actors.some((a) => a.path === 'engine/e1'));
  assert.ok(isAlive(up.child.pid!));
  assert.ok(agent.exitCode === null && isAlive(agent.pid!), 'the agent exited');
  const c = await connect(up.controlUrl);
  try {
    for (const e of ['e0', 'e1']) {
      const k = await c.ref(`kv/${e}`).query<{ ok: boolean; stats: { reserved: number; inUse: number } }>({ type: 'check' }, 10_000);
      assert.ok(k.ok);
      assert.is(k.stats.reserved + k.stats.inUse, 0, `kv/${e} holds pages after the fuzz`);
    }
  } finally {
    await c.close();
  }
  for (let i = 0; i < 4; i++) {
    const res = await fetch(`${up.httpUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny', prompt: `fuzz survivor ${i}`, max_tokens: 8, temperature: 0 }),
    });
    assert.is(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { choices: { text: string }[]; usage: { completion_tokens: number } };
    assert.is(body.usage.completion_tokens, 8);
  }
});

test.run();
