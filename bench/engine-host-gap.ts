/**
 * Host time per engine step outside the forward (issue 14: serving at >= 95% of the engine bound):
 * one engine (`spawnEngine`, the real actor and token sink) on the CPU backend, kept at C running
 * requests (closed loop), its token messages going over ws to a sink node in a child process
 * (msgpack frames, as to the router). Prints, per C, the ms per step by phase (schedule, build,
 * update, send) and the gap (the backend idle between forwards), from the engine's own counters
 * (`status` → counters.host, actors/engine/host-timing.ts), over a window of steady steps.
 *
 * The workload keeps the GPU serving bench's shape where it matters to the host: contexts of
 * 512 + up to 256 tokens (page tables of 33–48 pages), one request finishing and one admitted every
 * few steps. Prompts share a 496-token prefix (prefix-cache hit) so that the warm-up does not
 * prefill C × 512 tokens on a CPU; each has 16 tokens of its own. Greedy, no stop ids (exact lengths).
 *
 * Usage: node --import tsx bench/engine-host-gap.ts [--model tiny] [--concurrency 64,128,256]
 *   [--steps 40] [--threads 1] [--overlap on|off] [--label NAME] [--json FILE]
 * (MICROSERVE_LOG=error keeps it quiet.) The forward's own speed does not enter the host figures;
 * threads 1 leaves the loop a core of its own on a small machine.
 */
import { fork } from 'node:child_process';
import { cpus } from 'node:os';
import { writeFileSync } from 'node:fs';
import { spawnEngine, type EngineOptions } from '../actors/engine/actor.ts';
import type { HostTimes } from '../actors/messages.ts';
import { ActorSystem } from '../actors/runtime/system.ts';

const TOKEN = 'host-gap-bench-token-0123456789';
const PREFIX = 496;
const OWN = 16;
const OUT = 256;

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : def;
}

/** Child: a node with `sink/bench`, which takes token messages as the router does (counts them). */
async function sinkMain(controlUrl: string): Promise<void> {
  const node = await ActorSystem.start({ nodeId: 'sink', token: TOKEN, controlUrl });
  let numTokens = 0;
  node.spawn('sink/bench', (msg: { type: string; tokens?: number[]; items?: { tokens: number[] }[] }) => {
    if (msg.type === 'tokens') numTokens += msg.tokens?.length ?? 0;
    else for (const it of msg.items ?? []) numTokens += it.tokens.length;
  });
  process.send!({ ready: true });
  process.on('message', (m: { type?: string }) => {
    if (m?.type === 'count') process.send!({ numTokens });
  });
  process.on('disconnect', () => void node.close().then(() => process.exit(0)));
}

interface Row {
  concurrency: number;
  steps: number;
  stepMs: number;
  forwardMs: number;
  gapMs: number;
  scheduleMs: number;
  buildMs: number;
  updateMs: number;
  sendMs: number;
}

function diff(a: HostTimes, b: HostTimes, C: number): Row {
  const n = b.numForwards - a.numForwards;
  const per = (k: keyof HostTimes) => (b[k] - a[k]) / n;
  return {
    concurrency: C,
    steps: n,
    stepMs: 0,
    forwardMs: per('forwardMs'),
    gapMs: (b.gapMs - a.gapMs) / Math.max(1, b.numGaps - a.numGaps),
    scheduleMs: per('scheduleMs'),
    buildMs: per('buildMs'),
    updateMs: per('updateMs'),
    sendMs: per('sendMs'),
  };
}

async function benchMain(): Promise<void> {
  const model = arg('model', 'tiny');
  const levels = arg('concurrency', '64,128,256').split(',').map(Number);
  const numSteps = Number(arg('steps', '40'));
  const threads = Number(arg('threads', '1'));
  const overlap = arg('overlap', '');
  const label = arg('label', overlap ? `overlap ${overlap}` : 'default');
  const jsonPath = arg('json', '');
  const node = await ActorSystem.start({ nodeId: 'control', token: TOKEN, listen: { host: '127.0.0.1', port: 0 } });
  const child = fork(new URL(import.meta.url).pathname, ['--sink', node.url!], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  await new Promise<void>((r) => child.once('message', () => r()));
  for (let i = 0; i < 500 && !node.listActors().some((a) => a.path === 'sink/bench'); i++) await new Promise((r) => setTimeout(r, 10));
  const maxC = Math.max(...levels);
  const opts: EngineOptions & Record<string, unknown> = { name: 'b', model, kvPages: Math.ceil((maxC + 8) * (PREFIX + OWN + OUT + 16) / 16), pageSize: 16, maxBatchTokens: 512, maxNumSeqs: maxC, threads };
  if (overlap) opts.overlap = overlap === 'on';
  const engine = await spawnEngine(node, opts);
  const core = engine.core;
  const vocab = engine.loaded.config.vocabSize;
  const prefix = Array.from({ length: PREFIX }, (_, i) => (i * 7919 + 13) % vocab);
  let seq = 0;
  const submit = (maxTokens: number) => {
    const id = `r${seq++}`;
    const own = Array.from({ length: OWN }, (_, i) => (seq * 104729 + i * 31 + 7) % vocab);
    core.generate({ id, promptIds: [...prefix, ...own], sampling: { maxTokens, temperature: 0, topP: 1, stopTokenIds: [] }, replyTo: 'sink/bench' });
  };
  // the shared prefix goes into the prefix cache first (pages are cached when a request ends)
  submit(1);
  await core.whenIdle();
  const host = () => ({ ...core.counters.host! });
  const rows: Row[] = [];
  for (const C of levels) {
    // the first wave's lengths are spread over [1, OUT], so finishes (and admissions) are steady from the start
    for (let i = 0; i < C; i++) submit(1 + Math.floor((i * OUT) / C));
    const wait = (n: number) =>
      new Promise<void>((resolve) => {
        const target = core.counters.host!.numForwards + n;
        const t = setInterval(() => {
          while (core.requests.size < C) submit(OUT);
          if (core.counters.host!.numForwards >= target) {
            clearInterval(t);
            resolve();
          }
        }, 1);
      });
    await wait(Math.max(12, Math.ceil((C * OWN) / 512) + 4)); // warm-up: the first wave admitted
    const a = host();
    const t0 = performance.now();
    await wait(numSteps);
    const row = diff(a, host(), C);
    row.stepMs = (performance.now() - t0) / row.steps;
    rows.push(row);
    process.stderr.write(`C=${C}: ${row.steps} steps, gap ${row.gapMs.toFixed(3)} ms/step (schedule ${row.scheduleMs.toFixed(3)}, build ${row.buildMs.toFixed(3)}, update ${row.updateMs.toFixed(3)}, send ${row.sendMs.toFixed(3)}), forward ${row.forwardMs.toFixed(1)} ms\n`);
    for (const r of [...core.requests.values()]) core.abort(r.id);
    await core.whenIdle();
  }
  const numTokens = await new Promise<number>((r) => {
    child.once('message', (m: { numTokens: number }) => r(m.numTokens));
    child.send({ type: 'count' });
  });
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores; ${engine.loaded.backend.device} backend, ${threads} thread(s); Node ${process.version}`;
  const date = new Date().toISOString();
  const out = [
    `engine host time per step: ${label}; model ${model}; ${machine}; ${date}`,
    `(generated ${core.counters.tokensGenerated} tokens, sink received ${numTokens})`,
    '| C | steps | gap ms | schedule | build | update | send | other in gap | forward ms |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  const isOverlap = (core.status() as { overlap?: boolean }).overlap === true;
  for (const r of rows) {
    const inGap = r.scheduleMs + r.buildMs + r.updateMs + (isOverlap ? 0 : r.sendMs);
    out.push(`| ${r.concurrency} | ${r.steps} | ${r.gapMs.toFixed(3)} | ${r.scheduleMs.toFixed(3)} | ${r.buildMs.toFixed(3)} | ${r.updateMs.toFixed(3)} | ${r.sendMs.toFixed(3)}${isOverlap ? ' (overlapped)' : ''} | ${(r.gapMs - inGap).toFixed(3)} | ${r.forwardMs.toFixed(1)} |`);
  }
  process.stdout.write(out.join('\n') + '\n');
  if (jsonPath) writeFileSync(jsonPath, JSON.stringify({ label, model, machine, date, isOverlap, rows }, null, 2));
  await engine.close();
  child.disconnect();
  await node.close();
}

if (process.argv[2] === '--sink') await sinkMain(process.argv[3]);
else await benchMain();
