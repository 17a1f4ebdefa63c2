import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { RequestOutcome } from '../../bench/runner/client.ts';
import { meetsSlo, parseGoodput, percentile, pointMetrics, stats } from '../../bench/runner/metrics.ts';
import { parsePrometheus, serverCounts, serverDelta } from '../../bench/runner/server-metrics.ts';

const close = (a: number, b: number, eps = 1e-9) => assert.ok(Math.abs(a - b) <= eps, `${a} != ${b}`);

test('percentiles interpolate like numpy.percentile', () => {
  const s = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  // numpy: percentile(s, 50) = 5.5, 90 -> 9.1, 99 -> 9.91, 0 -> 1, 100 -> 10
  close(percentile(s, 50), 5.5);
  close(percentile(s, 90), 9.1);
  close(percentile(s, 99), 9.91);
  close(percentile(s, 0), 1);
  close(percentile(s, 100), 10);
  close(percentile([7], 99), 7);
  assert.ok(Number.isNaN(percentile([], 50)));
});

test('stats: mean, median, p90, p99, std', () => {
  const st = stats([4, 1, 3, 2]);
  close(st.mean, 2.5);
  close(st.median, 2.5);
  close(st.p90, 3.7);
  close(st.p99, 3.97);
  close(st.std, Math.sqrt(1.25));
});

const outcome = (o: Partial<RequestOutcome>): RequestOutcome => ({
  isOk: true,
  startMs: 0,
  ttftMs: 10,
  e2elMs: 100,
  itlMs: [],
  tpotMs: null,
  promptTokens: 64,
  outputTokens: 1,
  usageOutputTokens: null,
  ...o,
});

test('point metrics on known outcomes', () => {
  const outs = [
    outcome({ ttftMs: 10, e2elMs: 100, itlMs: [30, 30, 30], tpotMs: 30, outputTokens: 4 }),
    outcome({ ttftMs: 20, e2elMs: 200, itlMs: [60, 60, 60], tpotMs: 60, outputTokens: 4 }),
    outcome({ ttftMs: 30, e2elMs: 300, itlMs: [90, 90, 90], tpotMs: 90, outputTokens: 4 }),
    outcome({ isOk: false, error: 'HTTP 500: boom', ttftMs: null, outputTokens: 0 }),
  ];
  const m = pointMetrics(outs, 2, { ttft: 25, e2el: 250 });
  assert.equal([m.completed, m.failed, m.errors], [3, 1, { 'HTTP 500: boom': 1 }]);
  assert.equal([m.totalInputTokens, m.totalOutputTokens], [192, 12]);
  close(m.requestThroughput, 1.5);
  close(m.outputThroughput, 6);
  close(m.totalTokenThroughput, 102);
  close(m.ttftMs.mean, 20);
  close(m.e2elMs.median, 200);
  close(m.e2elMs.p99, 298);
  close(m.tpotMs.mean, 60);
  close(m.itlMs.mean, 60);
  close(m.itlMs.p90, 90);
  close(m.goodput!, 1); // two of three meet ttft ≤ 25 and e2el ≤ 250, over 2 s
  assert.is(pointMetrics(outs, 2, null).goodput, null);
});

test('goodput SLO parsing and checks', () => {
  assert.equal(parseGoodput(['ttft:500', 'tpot:50']), { ttft: 500, tpot: 50 });
  assert.equal(parseGoodput(['e2el:1000.5,ttft:10']), { e2el: 1000.5, ttft: 10 });
  assert.throws(() => parseGoodput(['latency:5']), /not KEY:MS/);
  assert.ok(meetsSlo(outcome({ tpotMs: 40 }), { tpot: 50 }));
  assert.not.ok(meetsSlo(outcome({ tpotMs: 60 }), { tpot: 50 }));
  assert.ok(meetsSlo(outcome({ tpotMs: null }), { tpot: 50 }), 'a one-token request has no TPOT to violate');
  assert.not.ok(meetsSlo(outcome({ isOk: false }), {}));
});

test('server metrics: Prometheus parsing and deltas', () => {
  const text = (n: number, gen: number, e2e: number) =>
    [
      '# HELP microserve_requests_total Requests finished',
      '# TYPE microserve_requests_total counter',
      `microserve_requests_total{finish="length"} ${n}`,
      'microserve_requests_total{finish="error"} 1',
      `microserve_generation_tokens_total ${gen}`,
      'microserve_prompt_tokens_total 640',
      `microserve_e2e_request_latency_seconds_sum ${e2e}`,
      `microserve_e2e_request_latency_seconds_count ${n + 1}`,
      'microserve_e2e_request_latency_seconds_bucket{le="0.5"} 3',
      'microserve_kv_pages{engine="e0",state="free"} 12',
    ].join('\n');
  const a = serverCounts(parsePrometheus(text(10, 80, 2.5)));
  assert.equal([a.requests, a.requestsByFinish, a.generationTokens, a.promptTokens], [11, { length: 10, error: 1 }, 80, 640]);
  const d = serverDelta(a, serverCounts(parsePrometheus(text(22, 176, 5.5))));
  assert.equal([d.requests, d.requestsByFinish, d.generationTokens, d.promptTokens], [12, { length: 12 }, 96, 0]);
  close(d.e2elMeanMs!, 250);
  assert.is(d.ttftMeanMs, null);
});

test.run();
