/**
 * Hot reload under continuous load, by editing the watched file as a user would:
 * dp → pd → balanced-pd (0.1) → dp, then an invalid file, then adding and removing an engine.
 * Zero failed requests, engine pids unchanged, each switch applied in place (the times are printed;
 * the reconfiguration time is a benchmark figure, bench/runner; here only a sanity bound of 2 s).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from '../../actors/runtime/client.ts';
import type { ActorSystem } from '../../actors/runtime/system.ts';
import { sleep, startUp, stopUp, tempHome, writeTopology, type UpProcess } from './helpers.ts';

const home = tempHome();
const file = writeTopology(home);
let up: UpProcess;
let isLoading = false;
let numOk = 0;
const failures: string[] = [];

async function oneRequest(i: number): Promise<void> {
  try {
    const r = await fetch(`${up.httpUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny', prompt: Array.from({ length: 40 }, (_, k) => 1000 + ((i * 37 + k * 11) % 5000)), max_tokens: 6, temperature: 0, ignore_eos: true }),
    });
    const j: any = await r.json();
    if (r.status !== 200 || j.usage?.completion_tokens !== 6) failures.push(`status ${r.status}: ${JSON.stringify(j).slice(0, 200)}`);
    else numOk++;
  } catch (e) {
    failures.push(`${e} ${(e as any)?.cause ?? ''}`);
  }
}

async function load(): Promise<void> {
  let i = 0;
  const inFlight = new Set<Promise<void>>();
  while (isLoading) {
    const p = oneRequest(i++).finally(() => inFlight.delete(p));
    inFlight.add(p);
    if (inFlight.size >= 4) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
}

let client: ActorSystem;
const status = (): Promise<any> => client.ref('control').query({ type: 'status' }, 10_000);

const enginePids = async () => Object.fromEntries((await status()).actors.filter((a: any) => a.kind === 'engine').map((a: any) => [a.path, a.pid]));

async function edit(mutate: (text: string) => string, expectVersion: number): Promise<any> {
  writeFileSync(file, mutate(readFileSync(file, 'utf8')));
  for (let i = 0; i < 200; i++) {
    await sleep(100);
    const st = await status();
    if (st.topologyVersion === expectVersion) return st;
    if (st.lastApply?.refused) return st;
  }
  throw new Error(`topology v${expectVersion} never applied`);
}

const setStrategy = (s: string, params: object) => (t: string) =>
  t.replace(/strategy: [^,]+, params: [^}]*\}/, `strategy: ${s}, params: ${JSON.stringify(params).replace(/^\{/, '{ ').replace(/\}$/, ' }')}`);

test.before(async () => {
  up = await startUp(file, home);
  process.env.MICROSERVE_HOME = home;
  client = await connect(up.controlUrl);
});
test.after(async () => {
  isLoading = false;
  await client.close();
  await stopUp(up);
});

test('dp → pd → balanced-pd(0.1) → dp under load: no failed request, same pids, each switch applied in place', async () => {
  const pids = await enginePids();
  isLoading = true;
  const loader = load();
  await sleep(1500);
  const seen: { strategy: string; ms: number }[] = [];
  let v = 1;
  for (const [s, params] of [['pd', {}], ['balanced-pd', { ratio: 0.1 }], ['dp', {}]] as const) {
    const st = await edit(setStrategy(s, params), ++v);
    assert.is(st.strategy, s, JSON.stringify(st.lastApply));
    seen.push({ strategy: s, ms: st.lastApply.reconfigureMs });
    await sleep(1500);
  }
  isLoading = false;
  await loader;
  process.stdout.write(`  switches: ${seen.map((x) => `${x.strategy} ${x.ms} ms`).join(', ')}; ${numOk} requests ok\n`);
  assert.equal(failures, []);
  assert.ok(numOk > 10, `only ${numOk} requests completed`);
  for (const x of seen) assert.ok(x.ms < 2000, `${x.strategy} took ${x.ms} ms`);
  assert.equal(await enginePids(), pids);
});

test('an invalid file is refused with field and line; the old topology keeps serving', async () => {
  const before = await status();
  const st = await edit((t) => t.replace('role: both', 'role: decoder'), before.topologyVersion + 1);
  assert.is(st.topologyVersion, before.topologyVersion);
  assert.match(st.lastApply.refused, /engines\[0\]\.role/);
  assert.match(st.lastApply.refused, /line \d+/);
  await oneRequest(999);
  assert.equal(failures, []);
  writeFileSync(file, readFileSync(file, 'utf8').replace('role: decoder', 'role: both'));
  await sleep(500);
});

test('adding and removing an engine under load: zero failed requests', async () => {
  const v0 = (await status()).topologyVersion;
  isLoading = true;
  const loader = load();
  await sleep(800);
  let st = await edit((t) => t + '  - { name: e2, role: both, device: cpu, kvPages: 256, threads: 1 }\n', v0 + 1);
  assert.ok(st.actors.some((a: any) => a.path === 'engine/e2' && a.state === 'running'), JSON.stringify(st.lastApply));
  await sleep(1500);
  st = await edit((t) => t.replace(/  - \{ name: e0,[^\n]*\n/, ''), v0 + 2);
  isLoading = false;
  await loader;
  assert.equal(failures, []);
  // The apply drains e0 and stops its process; its state is read from the supervisor, so allow
  // the stop to be reported a moment later (CI once saw 'running' in the first status after it).
  const e0Running = (x: any) => x.actors.some((a: any) => a.path === 'engine/e0' && a.state === 'running');
  for (let i = 0; i < 100 && e0Running(st); i++) {
    await sleep(100);
    st = await status();
  }
  assert.not.ok(e0Running(st), `e0 still running 10 s after the apply: ${JSON.stringify({ lastApply: st.lastApply, e0: st.actors.filter((a: any) => a.path === 'engine/e0') })}`);
  assert.ok(st.actors.some((a: any) => a.path === 'engine/e2'));
});

test.run();
