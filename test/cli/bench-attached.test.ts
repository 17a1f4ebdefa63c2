/**
 * `microserve bench --base-url` against a running cluster (real `up`, real bench processes): the
 * strategy the cluster ran is restored when the bench ends, also when it is interrupted (SIGINT),
 * and its prefix caches are flushed only with `--flush-caches`.
 */
import { spawn } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CLI, cli, cliAsync, ROOT, startUp, stopUp, tempHome, writeTopology, type UpProcess } from './helpers.ts';

let up: UpProcess;
const home = tempHome();
process.env.MICROSERVE_HOME = home;

const WORKLOAD = ['--dataset-name', 'random', '--random-input-len', '32', '--random-output-len', '4', '--request-rate', 'inf', '--no-progress'];

test.before(async () => {
  up = await startUp(writeTopology(home, { strategy: 'dp' }), home, ['--no-watch']);
});

test.after(async () => {
  await stopUp(up);
});

function status(): { strategy: string; actors: { path: string; kv?: { cached: number } }[] } {
  const r = cli(['status', '--json'], home);
  assert.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

const evicted = () => {
  const r = cli(['send', 'kv/e0', '{"type":"status"}'], home);
  assert.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout).numEvictedPages as number;
};

test('the strategy found is restored at the end; caches are not flushed unless asked', async () => {
  const ev0 = evicted();
  const r = await cliAsync(['bench', '--base-url', up.httpUrl, '--strategies', 'pd', '--num-prompts', '4', ...WORKLOAD], home);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /strategy pd: applied/);
  assert.match(r.stderr, /restored the strategy the cluster ran before: dp/);
  assert.not.match(r.stderr, /flushed/);
  assert.is(status().strategy, 'dp');
  assert.is(evicted(), ev0, 'a bench without --flush-caches evicted cached pages');
  assert.ok(status().actors.some((a) => a.path === 'engine/e0' && (a.kv?.cached ?? 0) > 0), 'the run left no cached prefix to keep');

  const f = await cliAsync(['bench', '--base-url', up.httpUrl, '--num-prompts', '2', '--flush-caches', ...WORKLOAD], home);
  assert.is(f.code, 0, f.stderr);
  assert.match(f.stderr, /flushed [1-9]\d* cached KV pages/);
  assert.not.match(f.stderr, /restored/); // it switched nothing
  assert.ok(evicted() > ev0);
});

test('SIGINT in the middle of a run restores the strategy found', async () => {
  const child = spawn(process.execPath, [CLI, 'bench', '--base-url', up.httpUrl, '--strategies', 'pd', '--num-prompts', '400', ...WORKLOAD.filter((x) => x !== 'inf' && x !== '--request-rate'), '--request-rate', '2'], {
    cwd: ROOT,
    env: { ...process.env, MICROSERVE_HOME: home, MICROSERVE_LOG: 'error' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  for (let i = 0; i < 1200 && !/strategy pd: applied/.test(out); i++) await new Promise((r) => setTimeout(r, 100));
  assert.match(out, /strategy pd: applied/);
  assert.is(status().strategy, 'pd');
  child.kill('SIGINT');
  const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 60_000).unref())]);
  assert.is(code, 130, out);
  assert.match(out, /restored the strategy the cluster ran before: dp/);
  assert.is(status().strategy, 'dp');
});

test('--extra-body goes into every request; it may not set a field the bench owns', async () => {
  const own = cli(['bench', '--base-url', up.httpUrl, '--num-prompts', '2', '--extra-body', '{"max_tokens":3}', ...WORKLOAD], home);
  assert.is.not(own.code, 0);
  assert.match(own.stderr, /--extra-body may not set 'max_tokens'/);
  for (const [bad, why] of [['{nope', /--extra-body is not JSON/], ['[1]', /--extra-body must be a JSON object/], ['null', /--extra-body must be a JSON object/]] as const) {
    const r = cli(['bench', '--base-url', up.httpUrl, '--num-prompts', '2', '--extra-body', bad, ...WORKLOAD], home);
    assert.is.not(r.code, 0, bad);
    assert.match(r.stderr, why);
  }
  // an unknown field reaches the router, which refuses it by name: every request fails with that 400
  const bogus = await cliAsync(['bench', '--base-url', up.httpUrl, '--num-prompts', '2', '--extra-body', '{"bogus_field":1}', ...WORKLOAD], home);
  assert.is(bogus.code, 0, bogus.stderr);
  assert.match(bogus.stdout, /\| 0 \| 2 \|/); // done 0, failed 2
  assert.match(bogus.stderr + bogus.stdout, /bogus_field/);
  const json = await cliAsync(['bench', '--base-url', up.httpUrl, '--num-prompts', '4', '--extra-body', '{"response_format":{"type":"json_object"}}', ...WORKLOAD], home);
  assert.is(json.code, 0, json.stderr);
  assert.match(json.stdout, /\| 4 \| 0 \|/); // done 4, failed 0
});

test.run();
