/** `microserve up` with real processes: health, status, send, kill --process, SIGTERM cleanup. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect } from '../../actors/runtime/client.ts';
import { cli, isAlive, sleep, startUp, stopUp, tempHome, writeTopology, type UpProcess } from './helpers.ts';

let up: UpProcess;
const home = tempHome();
process.env.MICROSERVE_HOME = home;

test.before(async () => {
  up = await startUp(writeTopology(home), home, ['--no-watch']);
});

test.after(async () => {
  await stopUp(up);
});

test('GET /health is 200 once every engine is ready', async () => {
  const r = await fetch(`${up.httpUrl}/health`);
  assert.is(r.status, 200);
});

test('status --json lists every actor with path, kind, role, host, pid, restarts, state', () => {
  const r = cli(['status', '--json'], home);
  assert.is(r.code, 0, r.stderr);
  const st = JSON.parse(r.stdout);
  const paths = st.actors.map((a: any) => a.path).sort();
  for (const p of ['control', 'engine/e0', 'engine/e1', 'kv/e0', 'kv/e1', 'router', 'supervisor/local']) assert.ok(paths.includes(p), `missing ${p}`);
  for (const a of st.actors) {
    for (const k of ['path', 'kind', 'role', 'host', 'pid', 'restarts', 'state']) assert.ok(k in a, `${a.path} lacks ${k}`);
    assert.ok(['starting', 'running', 'restarting', 'stopped', 'failed'].includes(a.state));
  }
  const e0 = st.actors.find((a: any) => a.path === 'engine/e0');
  assert.is(e0.kind, 'engine');
  assert.is(e0.role, 'both');
  assert.is(e0.state, 'running');
  assert.ok(e0.pid > 0);
  assert.ok(e0.kv.total === 256);
  // the memory plan made at engine start (CPU: host bytes)
  const p = e0.plan;
  assert.ok(p, 'engine/e0 has no memory plan in status');
  assert.is(p.numPages, 256);
  assert.is(p.kvTokens, 256 * 16);
  assert.is(p.maxBatchTokens, 512);
  assert.is(p.maxNumSeqs, 256);
  assert.is(p.maxRequestTokens, Math.min(p.maxContext, 256 * 16));
  assert.ok(p.isHost);
  assert.ok(p.weightsBytes > 0 && p.arenaBytes > 0, JSON.stringify(p));
  assert.is(p.kvBytes, 256 * p.kvBytes / p.numPages);
  assert.ok(p.kvBytes > 0);
});

test('status and the up banner show each engine\'s memory plan', () => {
  const r = cli(['status'], home);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /engine\/e0 memory plan, host: weights [0-9.]+ [KMG]iB, arena [0-9.]+ [KMG]iB, KV [0-9.]+ [KMG]iB \(256 pages, 4096 tokens\), max request \d+ tokens, step <= 512 tokens \/ 256 seqs/);
  assert.match(up.output(), /engine\/e1 memory plan, host: weights/);
  // the tiny preset: the banner says the weights are random
  assert.match(up.output(), /model tiny: random weights/);
  assert.match(up.output(), /note: random weights write gibberish/);
});

test('send prints the reply; a bad message is a typed error with exit 1', () => {
  const r = cli(['send', 'engine/e0', '{"type":"status"}'], home);
  assert.is(r.code, 0, r.stderr);
  assert.is(JSON.parse(r.stdout).name, 'e0');
  const bad = cli(['send', 'engine/e0', '{"type":"no-such-message"}'], home);
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /error \[BAD_MESSAGE\]/);
  const notJson = cli(['send', 'engine/e0', '{oops'], home);
  assert.is(notJson.code, 1);
  assert.match(notJson.stderr, /error \[BAD_MESSAGE\]: message is not JSON/);
  const nobody = cli(['send', 'engine/zz', '{"type":"status"}'], home);
  assert.is(nobody.code, 1);
  assert.match(nobody.stderr, /ACTOR_NOT_FOUND/);
});

test('kill --process: the engine process is SIGKILLed, restarted, and serves again', async () => {
  const before = JSON.parse(cli(['status', '--json'], home).stdout).actors.find((a: any) => a.path === 'engine/e1');
  const r = cli(['kill', 'engine/e1', '--process'], home);
  assert.is(r.code, 0, r.stderr);
  let after: any = null;
  const client = await connect(up.controlUrl); // token from the run file in MICROSERVE_HOME
  try {
    for (let i = 0; i < 600; i++) {
      await sleep(100);
      const st: any = await client.ref('control').query({ type: 'status' }, 10_000);
      after = st.actors.find((a: any) => a.path === 'engine/e1');
      if (after && after.restarts === 1 && after.state === 'running' && after.kv) break;
    }
  } finally {
    await client.close();
  }
  assert.is(after.restarts, 1);
  assert.is(after.state, 'running');
  assert.is.not(after.pid, before.pid);
  assert.not.ok(isAlive(before.pid));
  const s = cli(['send', 'engine/e1', '{"type":"status"}'], home);
  assert.is(s.code, 0, s.stderr);
});

test('help for every subcommand', () => {
  for (const c of ['up', 'status', 'kill', 'send', 'agent', 'generate']) {
    const r = cli([c, '--help'], home);
    assert.is(r.code, 0, `${c} --help: ${r.stderr}`);
    assert.match(r.stdout, /Usage: microserve/);
  }
});

test('SIGTERM stops everything up started', async () => {
  const st = JSON.parse(cli(['status', '--json'], home).stdout);
  const pids = [...new Set(st.actors.map((a: any) => a.pid).filter((p: any) => p))] as number[];
  assert.ok(pids.length >= 3);
  const code = await stopUp(up);
  assert.is(code, 0);
  await sleep(200);
  for (const p of pids) assert.not.ok(isAlive(p), `pid ${p} still alive`);
  const r = cli(['status', '--json'], home);
  assert.is(r.code, 1);
});

test.run();
