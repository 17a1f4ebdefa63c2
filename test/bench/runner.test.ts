/**
 * The client, the trace sender, the reports and --resume, against a small fake OpenAI server
 * (test/bench/fake-server.ts) whose delays and counts are known. The real router is covered by
 * e2e-bench.test.ts.
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { sendCompletion } from '../../bench/runner/client.ts';
import { randomDataset } from '../../bench/runner/datasets.ts';
import { readForResume, type ResultsFile } from '../../bench/runner/results.ts';
import { runBench, type BenchOptions } from '../../bench/runner/run.ts';
import { runTrace } from '../../bench/runner/trace.ts';
import { startFakeServer } from './fake-server.ts';

// no control plane of a real cluster may be picked up from this machine's run file
process.env.MICROSERVE_HOME = mkdtempSync(join(tmpdir(), 'bench-home-'));
delete process.env.MICROSERVE_CONTROL;

const FIRST = 40;
const GAP = 15;

test('client: counts tokens, times TTFT and ITL from its own clock', async () => {
  const s = await startFakeServer({ firstDelayMs: FIRST, gapMs: GAP });
  try {
    const t0 = performance.now();
    const o = await sendCompletion({ baseUrl: s.url, model: 'fake' }, { promptIds: [5, 6, 7], outputLen: 5 }, t0);
    assert.ok(o.isOk, o.error);
    assert.equal([o.outputTokens, o.usageOutputTokens, o.promptTokens, o.itlMs.length], [5, 5, 3, 4]);
    // lower bounds only: the server cannot send token k before FIRST + k·GAP
    assert.ok(o.ttftMs! >= FIRST - 1, `ttft ${o.ttftMs}`);
    assert.ok(o.ttftMs! + o.itlMs.reduce((a, b) => a + b, 0) >= FIRST + 4 * GAP - 1, `itl ${o.itlMs}`);
    assert.ok(o.e2elMs >= o.ttftMs! + o.itlMs.reduce((a, b) => a + b, 0) - 1e-6);
    assert.ok(Math.abs(o.tpotMs! - (o.e2elMs - o.ttftMs!) / 4) < 1e-9);
    const bad = await sendCompletion({ baseUrl: s.url, model: 'fake' }, { promptIds: [0, 1], outputLen: 3 }, t0);
    assert.not.ok(bad.isOk);
    assert.match(bad.error!, /^HTTP 500: .*planted failure/);
    const gone = await sendCompletion({ baseUrl: 'http://127.0.0.1:1', model: 'fake' }, { promptIds: [1], outputLen: 1 }, t0);
    assert.not.ok(gone.isOk);
  } finally {
    await s.close();
  }
});

test('trace: max concurrency holds requests back; every outcome is returned', async () => {
  const s = await startFakeServer({ firstDelayMs: 30, gapMs: 1 });
  try {
    const reqs = randomDataset({ numPrompts: 6, seed: 1, randomInputLen: 8, randomOutputLen: 2, tokenIdMax: 100 }).map((r) => ({ ...r, promptIds: r.promptIds.map((x) => x + 1) }));
    const r = await runTrace({ baseUrl: s.url, model: 'fake' }, reqs, { rate: Infinity, maxConcurrency: 2, seed: 0 });
    assert.is(r.outcomes.filter((o) => o.isOk).length, 6);
    const starts = r.outcomes.map((o) => o.startMs).sort((a, b) => a - b);
    // with 2 slots and ≥ 30 ms per request, the 3rd and 5th sends wait for earlier ones to end
    assert.ok(starts[2] >= 30 && starts[4] >= 60, `starts ${starts.map((x) => x.toFixed(1))}`);
  } finally {
    await s.close();
  }
});

test('runBench writes the three reports after each point, and --resume skips finished points', async () => {
  const s = await startFakeServer({ firstDelayMs: 5, gapMs: 2 });
  const dir = mkdtempSync(join(tmpdir(), 'bench-out-'));
  const opts: BenchOptions = {
    baseUrl: s.url,
    datasetName: 'random',
    randomInputLen: 16,
    randomOutputLen: 3,
    tokenIdMax: 1000,
    numPrompts: 8,
    numWarmups: 2,
    seed: 0,
    requestRates: [Infinity],
    maxConcurrency: null,
    strategies: [],
    goodput: { ttft: 10_000 },
    resultDir: dir,
    isProgress: false,
  };
  try {
    const first = await runBench(opts);
    assert.is(s.numRequests, 10, '8 measured + 2 warm-ups');
    for (const f of ['results.json', 'results.md', 'report.html']) assert.ok(existsSync(join(dir, f)), f);
    const json = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as ResultsFile;
    assert.equal(json, JSON.parse(JSON.stringify(first)));
    assert.is(json.schemaVersion, 1);
    assert.ok(json.machine.numCpus > 0 && json.createdAt.length > 0);
    const p = json.points[0];
    assert.equal([p.strategy, p.requestRate, p.completed, p.failed, p.totalOutputTokens, p.totalInputTokens], ['current', 'inf', 8, 0, 24, 128]);
    assert.equal([p.server?.requests, p.server?.generationTokens, p.server?.promptTokens], [8, 24, 128]);
    assert.is(p.goodput, p.requestThroughput);
    assert.is(p.samples.e2elMs.length, 8);

    const md = readFileSync(join(dir, 'results.md'), 'utf8');
    assert.match(md, /\| current \| inf \| 8 \| 0 \|/);
    assert.match(md, /\| current \| inf \| 8 \/ 8 \| 24 \/ 24 \|/);
    const html = readFileSync(join(dir, 'report.html'), 'utf8');
    assert.is((html.match(/<svg /g) ?? []).length, 4, 'E2EL and TTFT vs rate + two CDFs');
    assert.not.match(html, /<script|<link|src=|href=/, 'self-contained');

    // resume with one more rate: only the new point runs
    const second = await runBench({ ...opts, requestRates: [Infinity, 50], resume: true });
    assert.is(s.numRequests, 10 + 2 + 8);
    assert.equal(second.points.map((x) => x.requestRate), ['inf', 50]);
    assert.is(second.createdAt, first.createdAt);
    // a different trace is refused
    assert.throws(() => readForResume(dir, { ...second.config, traceHash: 'other' }), /different traceHash/);
  } finally {
    await s.close();
  }
});

test('the random range follows the served vocabulary; --token-id-max past it is refused before any request', async () => {
  const s = await startFakeServer({ firstDelayMs: 1, gapMs: 1, vocabSize: 300, baseVocabSize: 295 });
  const opts: BenchOptions = {
    baseUrl: s.url,
    datasetName: 'random',
    randomInputLen: 64,
    randomOutputLen: 2,
    numPrompts: 20,
    numWarmups: 0,
    seed: 3,
    requestRates: [Infinity],
    maxConcurrency: null,
    strategies: [],
    goodput: null,
    isProgress: false,
  };
  try {
    const lines: string[] = [];
    const r = await runBench(opts, (l) => lines.push(l));
    assert.equal([r.points[0].completed, r.points[0].failed], [20, 0], JSON.stringify(r.points[0].errors));
    assert.is(r.config.dataset.tokenIdMax, 295, 'drawn from the ordinary tokens');
    // 1280 uniform draws from [0, 295): the largest is 294 or close to it, never 295 or more
    assert.ok(s.maxPromptId < 295 && s.maxPromptId >= 280, `max prompt id ${s.maxPromptId}`);
    assert.ok(lines.some((l) => l.includes('[0, 295)')), lines.join('\n'));
    const n = s.numRequests;
    await runBench({ ...opts, tokenIdMax: 128000 }).then(
      () => assert.unreachable('a range past the vocabulary was accepted'),
      (e) => {
        assert.is(e.code, 'BAD_CONFIG');
        assert.is(e.info?.field, 'token-id-max');
        assert.match(e.message, /--token-id-max 128000 is beyond the vocabulary of the served model 'fake' \(300 token ids\)/);
      },
    );
    assert.is(s.numRequests, n, 'no request was sent');
    const exact = await runBench({ ...opts, numPrompts: 2, tokenIdMax: 300 });
    assert.is(exact.config.dataset.tokenIdMax, 300, 'up to the whole vocabulary when asked');
  } finally {
    await s.close();
  }
});

test('a server without a vocabulary in /v1/models: --token-id-max or the Llama 3 range', async () => {
  const s = await startFakeServer({ firstDelayMs: 1, gapMs: 1 });
  try {
    const base: BenchOptions = { baseUrl: s.url, datasetName: 'random', randomInputLen: 4, randomOutputLen: 1, numPrompts: 2, numWarmups: 0, seed: 0, requestRates: [Infinity], maxConcurrency: null, strategies: [], goodput: null, isProgress: false };
    assert.is((await runBench(base)).config.dataset.tokenIdMax, 128000);
    assert.is((await runBench({ ...base, tokenIdMax: 50 })).config.dataset.tokenIdMax, 50);
  } finally {
    await s.close();
  }
});

test.run();
