/**
 * Router benchmark: what the router adds to a request, and how many routing decisions it makes.
 *
 * - Overhead per request (p50/p99): HTTP request → response for a 1-token completion against
 *   zero-cost engine doubles in their own processes (test/router/fake-engine.ts: no compute, no
 *   sleeps), one request at a time; everything measured is router + runtime + HTTP. Per strategy
 *   (dp: start_generate; pd: prep_recv + remote_send (+ kv_write frames) + start_generate).
 * - Routing decisions/s: (a) the strategy function alone over a context whose operations return
 *   at once (the decision logic's own cost); (b) whole requests/s through the router with 64 in
 *   flight (dp, 1 token each).
 * Usage: node --import tsx bench/router-overhead.ts [--requests 400] → prints a table, writes
 * bench/results/router-overhead.md
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { KvAddr } from '../actors/messages.ts';
import { startRouter } from '../actors/router/index.ts';
import type { RoutedRequest, StrategyContext } from '../actors/router/strategy-api.ts';
import { BUILTIN_STRATEGIES } from '../actors/router/strategies/index.ts';
import { loadStrategy } from '../actors/router/strategy-loader.ts';
import { ActorSystem } from '../actors/runtime/system.ts';
import { Llama3PresetTokenizer } from '../actors/text/llama3.ts';

const arg = (name: string, dflt: number) => (process.argv.includes(name) ? Number(process.argv[process.argv.indexOf(name) + 1]) : dflt);
const NUM_REQUESTS = arg('--requests', 400);
const TOKEN = 'bench-router-token';
const engineMain = fileURLToPath(new URL('../test/router/fake-engine-process.ts', import.meta.url));
const ZERO_COST = { tokenMs: 0, prefillMsPerToken: 0, sendChunkMs: 0, sendChunks: 1 };

const control = await ActorSystem.start({ nodeId: 'control', token: TOKEN, listen: { host: '127.0.0.1', port: 0 } });
const engines = [
  { name: 'p0', role: 'prefill' as const },
  { name: 'd0', role: 'decode' as const },
];
const procs: ChildProcess[] = await Promise.all(
  engines.map(
    (e) =>
      new Promise<ChildProcess>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', engineMain, control.url!, e.name, e.role, JSON.stringify(ZERO_COST)], {
          env: { ...process.env, MICROSERVE_TOKEN: TOKEN, MICROSERVE_LOG: 'error' },
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        child.stdout!.on('data', (d) => String(d).includes('ready') && resolve(child));
      }),
  ),
);
const router = await startRouter(control, { port: 0, modelName: 'tiny', tokenizer: Llama3PresetTokenizer.get(), contextLength: 8192, engines, strategy: 'dp' });
await router.ready(30_000);

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))];
// ~64 tokens of text; a fresh suffix per request so prefix caches do not change the work
const prompt = (i: number) => `Request ${i}. ` + 'The router tokenizes this prompt, picks engines and streams the answer back. '.repeat(4);

async function oneRequest(i: number, isStream: boolean): Promise<void> {
  const r = await fetch(router.url + '/v1/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: prompt(i), max_tokens: 1, temperature: 0, stream: isStream }),
  });
  await r.text();
  if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
}

async function latencies(isStream: boolean): Promise<number[]> {
  for (let i = 0; i < 200; i++) await oneRequest(-i - 1, isStream); // warm-up (JIT, connections)
  const out: number[] = [];
  for (let i = 0; i < NUM_REQUESTS; i++) {
    const t0 = performance.now();
    await oneRequest(i, isStream);
    out.push(performance.now() - t0);
  }
  return out;
}

const rows: string[][] = [];
for (const [strategy, isStream] of [['dp', false], ['dp', true], ['pd', false], ['balanced-pd', false]] as const) {
  await router.setPlan({ engines, strategy, params: strategy === 'balanced-pd' ? { ratio: 0.2 } : {} });
  const xs = await latencies(isStream);
  rows.push([`overhead per request, ${strategy}${isStream ? ', streamed' : ''}`, `p50 ${quantile(xs, 0.5).toFixed(2)} ms`, `p99 ${quantile(xs, 0.99).toFixed(2)} ms`]);
}

// (b) whole requests through the router, 64 in flight
await router.setPlan({ engines, strategy: 'dp', params: {} });
{
  const inFlight = 64;
  const total = NUM_REQUESTS * 4;
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < total) await oneRequest(next++, false);
  }));
  const secs = (performance.now() - t0) / 1000;
  rows.push([`routed requests/s (dp, ${inFlight} in flight, HTTP included)`, `${(total / secs).toFixed(0)} /s`, '']);
}

// (a) decisions alone: the strategy over a context whose operations answer at once
function instantCtx(params: Record<string, unknown>): StrategyContext {
  const names = ['p0', 'p1', 'd0', 'd1'];
  const role = (n: string) => (n.startsWith('p') ? 'prefill' : 'decode') as 'prefill' | 'decode';
  const loads: Record<string, number> = { p0: 1, p1: 0, d0: 2, d1: 1 };
  return {
    params,
    engines: (r) => names.filter((n) => !r || role(n) === r),
    role,
    load: (n) => loads[n],
    kv: () => null,
    matchPrefix: async (n) => (n === 'd1' ? 32 : 0),
    prepRecv: async (n, _ids, end) => ({ matchedLen: 0, kvAddr: { engine: n, pageIds: [], pageSize: 16, matchedLen: 0, end, transports: ['host'] } as KvAddr }),
    remoteSend: async (_n, _ids, begin, end) => ({ computedTokens: end, sentTokens: end - begin, sentBytes: 0, transport: 'host' }),
    startGenerate: async () => {},
    abort: async () => {},
    debug: () => {},
  };
}
const req: RoutedRequest = { id: 'b', promptIds: Array.from({ length: 200 }, (_, i) => i), numPromptTokens: 200, numGenerated: 0, attempt: 1, sampling: { maxTokens: 1, temperature: 0, topP: 1, stopTokenIds: [] } };
for (const name of BUILTIN_STRATEGIES) {
  const s = await loadStrategy(name);
  const ctx = instantCtx(s.params);
  const n = 200_000;
  for (let i = 0; i < 1000; i++) await s.run(ctx, req);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await s.run(ctx, req);
  const secs = (performance.now() - t0) / 1000;
  rows.push([`routing decisions/s, ${name} (strategy alone)`, `${(n / secs / 1e6).toFixed(2)} M/s`, `${((secs / n) * 1e9).toFixed(0)} ns each`]);
}

await router.close();
for (const p of procs) p.kill('SIGTERM');
await control.close();

const machine = `${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, Node ${process.version}, load average ${loadavg()[0].toFixed(1)} at the end (other work on the machine inflates these figures)`;
const date = new Date().toISOString().slice(0, 10);
const md = [
  '# Router overhead benchmark',
  '',
  `Machine: ${machine}. Date: ${date}. Router (HTTP + runtime control node) in one process, two zero-cost engine doubles in their own processes (loopback ws); ${NUM_REQUESTS} requests per latency row after 200 warm-up; 1-token completions of a ~70-token text prompt (tokenization included).`,
  '',
  '| what | value | note |',
  '| --- | --- | --- |',
  ...rows.map((r) => `| ${r.join(' | ')} |`),
  '',
].join('\n');
process.stdout.write(md);
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(new URL('./results/router-overhead.md', import.meta.url), md);
process.exit(0);
