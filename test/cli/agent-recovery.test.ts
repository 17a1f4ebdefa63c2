/**
 * An agent host under kills, through real processes: `up` (engine e0) and `microserve agent --host
 * h2` (engine r1), started as a user would.
 * - `kill -9` of the agent process while 5 greedy streams run: every stream equals its undisturbed
 *   run, `status` never shows r1 running while its agent is away, and both come back;
 * - the agent process SIGSTOPped (hung): killed and restarted like a dead one;
 * - `microserve kill supervisor/h2 --process` until the crash loop ends `failed` with the reason
 *   (r1 failed with it, /health degraded, not down); `microserve restart engine/r1` brings both back;
 * - `up` SIGKILLed: its own engine exits (no orphan); the agent's engine waits, and the next `up`
 *   (same control address and token) adopts it with the same pid; past the agent's `--control-grace` the
 *   engine is stopped instead, and started again when control is back;
 * - the keeper SIGKILLed: the agent process and its engine exit with it (no orphans).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { connect } from '../../actors/runtime/client.ts';
import type { ActorSystem } from '../../actors/runtime/system.ts';
import type { ActorStatus } from '../../supervisors/cluster-status.ts';
import { streamGreedy } from '../shared/sse.ts';
import { CLI, ROOT, TWO_HOST_ENGINES, cliAsync, freePort, isAlive, sleep, startUp, stopUp, tempHome, writeTopology, type UpProcess } from './helpers.ts';

const CONTROL_GRACE_S = 15;
const NUM_STREAMS = 5;
const MAX_TOKENS = 160;
const PROMPTS = Array.from({ length: NUM_STREAMS }, (_, i) => `Agent stream ${i}: count the sheep of field ${i * 11 + 2}, one by one.`);

const home = tempHome();
process.env.MICROSERVE_HOME = home;
let file = '';
let up: UpProcess;
let agent: ChildProcess;
let client: ActorSystem;
let agentLog = '';

async function actors(): Promise<ActorStatus[]> {
  return ((await client.ref('control').query({ type: 'status' }, 30_000)) as { actors: ActorStatus[] }).actors;
}
const row = (st: ActorStatus[], path: string) => st.find((a) => a.path === path)!;

async function until<T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 60_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() - t0 > timeoutMs) assert.unreachable(`${what}: still ${JSON.stringify(v)} after ${timeoutMs} ms\nagent log: ${agentLog}`);
    await sleep(200);
  }
}

const stream = (prompt: string) => streamGreedy(up.httpUrl, prompt, MAX_TOKENS);

/** The router's count of requests moved to another engine. */
async function migrations(): Promise<number> {
  const text = await (await fetch(`${up.httpUrl}/metrics`)).text();
  return [...text.matchAll(/^microserve_request_migrations_total(?:\{[^}]*\})? (\S+)$/gm)].reduce((a, m) => a + Number(m[1]), 0);
}

/** Requests until r1 served one (dp sends some there once it is up). */
async function servedByR1(): Promise<void> {
  const before = ((await client.ref('engine/r1').query({ type: 'status' }, 10_000)) as any).counters.requests;
  await until('a request served by r1', async () => {
    await Promise.all(
      [0, 1, 2, 3].map(async (i) => {
        const r = await fetch(`${up.httpUrl}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ prompt: [100 + i, 200, 300], max_tokens: 4, temperature: 0 }),
        });
        assert.is(r.status, 200, await r.clone().text());
      }),
    );
    return ((await client.ref('engine/r1').query({ type: 'status' }, 10_000)) as any).counters.requests;
  }, (n) => n > before);
}

function startAgent(port: number, extra: string[] = []): ChildProcess {
  const child = spawn(process.execPath, [CLI, 'agent', '--connect', `ws://127.0.0.1:${port}`, '--host', 'h2', ...extra], {
    cwd: ROOT,
    env: { ...process.env, MICROSERVE_LOG: 'error' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // kept for failure messages (the crash loop below logs its give-up, as it should)
  child.stderr!.on('data', (d) => (agentLog = (agentLog + d).slice(-4000)));
  return child;
}

async function restartUp(): Promise<void> {
  await client?.close().catch(() => undefined);
  up = await startUp(file, home, ['--no-watch'], 180_000);
  client = await connect(up.controlUrl);
}

test.before(async () => {
  const port = await freePort();
  file = writeTopology(home, { name: 'agent-recovery.yaml', transport: 'host', controlPort: port, hosts: ['h2'], engines: TWO_HOST_ENGINES });
  // `up` waits for r1, so the agent needs the token before up's run file has it: set it for both
  process.env.MICROSERVE_TOKEN = 'agent-recovery-token-0123456789';
  const upP = startUp(file, home, ['--no-watch'], 180_000);
  agent = startAgent(port, [`--control-grace`, String(CONTROL_GRACE_S)]);
  up = await upP;
  client = await connect(up.controlUrl);
  await until('r1 running on h2', actors, (st) => row(st, 'engine/r1')?.state === 'running' && row(st, 'engine/r1').host === 'h2');
});

test.after(async () => {
  await client?.close().catch(() => undefined);
  if (agent && agent.exitCode === null && agent.signalCode === null) {
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
  }
  if (up) await stopUp(up);
});

test('kill -9 of the agent process under 5 greedy streams: streams exact, r1 never shown running while away, both back', async () => {
  const reference = await Promise.all(PROMPTS.map((p) => stream(p)));
  for (const r of reference) assert.is(r.finish, 'length', r.error);
  const before = await actors();
  const agentPid = row(before, 'supervisor/h2').pid!;
  const r1Pid = row(before, 'engine/r1').pid!;
  assert.ok(agentPid > 0 && r1Pid > 0 && agentPid !== agent.pid, JSON.stringify(row(before, 'supervisor/h2')));

  const migrationsBefore = await migrations();
  const runs = PROMPTS.map((p) => stream(p));
  // kill once r1 is busy with some of them
  await until('r1 busy', () => client.ref('engine/r1').query<any>({ type: 'status' }, 10_000), (s) => s.numRunning > 0 && s.counters.tokensGenerated > 0, 30_000);
  process.kill(agentPid, 'SIGKILL');

  const seen: string[] = [];
  const health = new Set<number>();
  const back = await until(
    'agent and r1 back',
    async () => {
      const st = await actors();
      const sup = row(st, 'supervisor/h2');
      const r1 = row(st, 'engine/r1');
      seen.push(`${sup.state}/${sup.pid} ${r1.state}/${r1.pid}`);
      // the truth while the agent is away: its engine is not running
      if (sup.state !== 'running') assert.is.not(r1.state, 'running', seen.join(', '));
      health.add((await fetch(`${up.httpUrl}/health`)).status);
      return st;
    },
    (st) => row(st, 'supervisor/h2').state === 'running' && row(st, 'supervisor/h2').pid !== agentPid && row(st, 'engine/r1').state === 'running' && row(st, 'engine/r1').pid !== r1Pid,
  );
  const results = await Promise.all(runs);
  assert.ok((await migrations()) > migrationsBefore, 'no stream was on r1 when its agent died (nothing migrated)');
  results.forEach((r, i) => {
    assert.is(r.finish, 'length', r.error);
    assert.equal(r.ids, reference[i].ids, `stream ${i}`);
  });
  assert.ok(seen.some((s) => !s.startsWith('running')), `the agent was never seen away: ${seen.join(', ')}`);
  assert.not.ok(health.has(503), 'e0 served all along: /health never 503');
  const sup = row(back, 'supervisor/h2');
  assert.ok(sup.restarts >= 1, JSON.stringify(sup));
  assert.match(sup.lastExit!.reason, /signal SIGKILL/);
  assert.not.ok(isAlive(agentPid));
  await until('old r1 process gone', async () => isAlive(r1Pid), (x) => !x, 15_000);
  await servedByR1();
});

test('a hung agent process (SIGSTOP) is noticed by its missed heartbeats, killed and restarted; r1 comes back', async () => {
  const st = await actors();
  const agentPid = row(st, 'supervisor/h2').pid!;
  const r1Pid = row(st, 'engine/r1').pid!;
  process.kill(agentPid, 'SIGSTOP');
  const back = await until('agent and r1 back', actors, (s) => row(s, 'supervisor/h2').state === 'running' && row(s, 'supervisor/h2').pid !== agentPid && row(s, 'engine/r1').state === 'running' && row(s, 'engine/r1').pid !== r1Pid);
  assert.match(row(back, 'supervisor/h2').lastExit!.reason, /signal SIGKILL/);
  await until('the stopped process gone', async () => isAlive(agentPid) || isAlive(r1Pid), (x) => !x, 15_000);
  await servedByR1();
});

test('kill supervisor/h2 --process until the crash loop ends failed (r1 with it, health degraded); restart of r1 brings both back', async () => {
  // each new agent process is killed as soon as it runs (a crash loop crashes while starting): the
  // six crashes then fit the 60 s window however slowly this machine starts processes
  let lastPid: number | null = null;
  for (let i = 0; ; i++) {
    const st = await until('a new agent process, or failed', actors, (s) => row(s, 'supervisor/h2').state === 'failed' || (row(s, 'supervisor/h2').pid ?? lastPid) !== lastPid);
    const sup = row(st, 'supervisor/h2');
    if (sup.state === 'failed') break;
    assert.ok(i < 10, 'never failed');
    lastPid = sup.pid;
    if (i === 0) {
      const k = await cliAsync(['kill', 'supervisor/h2', '--process'], home);
      assert.is(k.code, 0, k.stderr);
      assert.equal(JSON.parse(k.stdout), { killed: true });
    } else {
      await client.ref('control').query({ type: 'kill', path: 'supervisor/h2', process: true }, 30_000);
    }
  }
  const st = await actors();
  assert.match(row(st, 'supervisor/h2').failed!, /crashes within 60000 ms \(last: code null, signal SIGKILL\)/);
  assert.is(row(st, 'engine/r1').state, 'failed');
  assert.match(row(st, 'engine/r1').failed!, /agent process of host h2 failed/);
  const text = (await cliAsync(['status'], home)).stdout;
  assert.match(text, /supervisor\/h2 failed: .*microserve restart supervisor\/h2/);
  const h = await until('health degraded', async () => fetch(`${up.httpUrl}/health`).then(async (r) => ({ code: r.status, body: await r.json() })), (x) => x.body.status === 'degraded');
  assert.is(h.code, 200);
  assert.equal(h.body.down, ['r1']);

  // what status suggests for the engine's line: restarting it brings its agent process back
  assert.match(text, /engine\/r1 failed: the agent process of host h2 failed: .*\(bring it back: microserve restart engine\/r1\)/);
  const r = await cliAsync(['restart', 'engine/r1'], home);
  assert.is(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout), { restarted: 'engine/r1', process: 'agent-h2' });
  const after = await until('agent and r1 back after restart', actors, (s) => row(s, 'supervisor/h2').state === 'running' && row(s, 'engine/r1').state === 'running');
  assert.is(row(after, 'supervisor/h2').failed, undefined);
  await until('health ok', () => fetch(`${up.httpUrl}/health`).then((x) => x.json()), (b) => b.status === 'ok');
  await servedByR1();
});

test('up SIGKILLed: its engine exits; the agent keeps r1, and the next up (same control address and token) adopts it with the same pid', async () => {
  const st = await actors();
  const e0Pid = row(st, 'engine/e0').pid!;
  const r1Pid = row(st, 'engine/r1').pid!;
  const agentPid = row(st, 'supervisor/h2').pid!;
  const exited = new Promise((r) => up.child.once('exit', r));
  up.child.kill('SIGKILL');
  await exited;
  await until('e0 (a child of up) gone', async () => isAlive(e0Pid), (x) => !x, 15_000);
  assert.ok(isAlive(r1Pid) && isAlive(agentPid) && isAlive(agent.pid!), 'the agent host keeps running within its grace');

  await restartUp();
  const back = await until('r1 adopted', actors, (s) => row(s, 'engine/r1')?.state === 'running' && row(s, 'engine/e0')?.state === 'running');
  assert.is(row(back, 'engine/r1').pid, r1Pid, 'r1 was adopted, not restarted');
  assert.is(row(back, 'supervisor/h2').pid, agentPid);
  await servedByR1();
});

test(`past --control-grace (${CONTROL_GRACE_S} s) without control the agent stops r1; the next up starts it again`, async () => {
  const st = await actors();
  const r1Pid = row(st, 'engine/r1').pid!;
  const agentPid = row(st, 'supervisor/h2').pid!;
  const exited = new Promise((r) => up.child.once('exit', r));
  up.child.kill('SIGKILL');
  await exited;
  await until('r1 stopped by its agent', async () => isAlive(r1Pid), (x) => !x, (CONTROL_GRACE_S + 30) * 1000);
  assert.ok(isAlive(agentPid) && isAlive(agent.pid!), 'the agent itself waits for control');

  await restartUp();
  const back = await until('r1 started again', actors, (s) => row(s, 'engine/r1')?.state === 'running');
  assert.is.not(row(back, 'engine/r1').pid, r1Pid);
  assert.is(row(back, 'supervisor/h2').pid, agentPid);
  await servedByR1();
});

test('the keeper SIGKILLed: the agent process and its engine exit with it (no orphans)', async () => {
  const st = await actors();
  const pids = [row(st, 'supervisor/h2').pid!, row(st, 'engine/r1').pid!];
  agent.kill('SIGKILL');
  await new Promise((r) => agent.once('exit', r));
  for (const pid of pids) await until(`pid ${pid} gone`, async () => isAlive(pid), (x) => !x, 20_000);
  const after = await until('r1 shown away', actors, (s) => row(s, 'engine/r1').state !== 'running');
  assert.is(row(after, 'engine/r1').pid, null);
});

test.run();
