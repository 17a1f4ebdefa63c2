/**
 * `report.html`: one self-contained page (inline CSS and SVG, no script, no external resource):
 * E2EL and TTFT against request rate per strategy (mean solid, P99 dashed), the latency CDFs of
 * every strategy at each rate, and the full table.
 */
import { describeMachine, describeWorkload, fmt, rateLabel } from './report-md.ts';
import type { PointResult, ResultsFile } from './results.ts';
import { cdfPlot, esc, linePlot, PALETTE, type LineSeries } from './svg.ts';

const rateOrder = (r: number | 'inf') => (r === 'inf' ? Infinity : r);

function strategiesOf(r: ResultsFile): string[] {
  return [...new Set(r.points.map((p) => p.strategy))];
}

function ratesOf(r: ResultsFile): (number | 'inf')[] {
  return [...new Set(r.points.map((p) => p.requestRate))].sort((a, b) => rateOrder(a) - rateOrder(b));
}

function vsRate(r: ResultsFile, metric: 'e2elMs' | 'ttftMs', title: string): string {
  const rates = ratesOf(r);
  const series: LineSeries[] = [];
  strategiesOf(r).forEach((s, i) => {
    const at = (rate: number | 'inf') => r.points.find((p) => p.strategy === s && p.requestRate === rate);
    const color = PALETTE[i % PALETTE.length];
    series.push({ name: `${s} mean`, color, values: rates.map((x) => at(x)?.[metric].mean ?? null) });
    series.push({ name: `${s} P99`, color, isDashed: true, values: rates.map((x) => at(x)?.[metric].p99 ?? null) });
  });
  return linePlot({ title, xLabel: 'request rate (req/s)', yLabel: `${title.split(' ')[0]} (ms)`, categories: rates.map(rateLabel), series });
}

function cdfs(r: ResultsFile): string {
  const strategies = strategiesOf(r);
  return ratesOf(r)
    .map((rate) => {
      const pts = strategies.map((s) => r.points.find((p) => p.strategy === s && p.requestRate === rate));
      const series = (k: 'e2elMs' | 'ttftMs') =>
        pts.flatMap((p, i) => (p ? [{ name: p.strategy, color: PALETTE[i % PALETTE.length], values: p.samples[k] }] : []));
      return (
        `<h3>Latency CDFs at ${esc(rateLabel(rate))} req/s</h3><div class="row">` +
        cdfPlot({ title: `E2EL CDF @ ${rateLabel(rate)} req/s`, xLabel: 'E2EL (ms)', series: series('e2elMs') }) +
        cdfPlot({ title: `TTFT CDF @ ${rateLabel(rate)} req/s`, xLabel: 'TTFT (ms)', series: series('ttftMs') }) +
        '</div>'
      );
    })
    .join('');
}

function table(points: PointResult[]): string {
  const head = ['strategy', 'rate', 'done', 'failed', 'req/s', 'out tok/s', 'TTFT mean', 'TTFT p50', 'TTFT p90', 'TTFT p99', 'TPOT mean', 'TPOT p99', 'ITL mean', 'ITL p99', 'E2EL mean', 'E2EL p50', 'E2EL p90', 'E2EL p99', 'goodput'];
  const rows = points.map((p) =>
    [
      p.strategy,
      rateLabel(p.requestRate),
      String(p.completed),
      String(p.failed),
      fmt(p.requestThroughput, 2),
      fmt(p.outputThroughput, 1),
      fmt(p.ttftMs.mean),
      fmt(p.ttftMs.median),
      fmt(p.ttftMs.p90),
      fmt(p.ttftMs.p99),
      fmt(p.tpotMs.mean, 2),
      fmt(p.tpotMs.p99, 2),
      fmt(p.itlMs.mean, 2),
      fmt(p.itlMs.p99, 2),
      fmt(p.e2elMs.mean),
      fmt(p.e2elMs.median),
      fmt(p.e2elMs.p90),
      fmt(p.e2elMs.p99),
      p.goodput === null ? '-' : fmt(p.goodput, 2),
    ]
      .map((c) => `<td>${esc(c)}</td>`)
      .join(''),
  );
  return `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r}</tr>`).join('')}</tbody></table>`;
}

export function renderHtml(r: ResultsFile): string {
  const style =
    'body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}' +
    'td:first-child,th:first-child{text-align:left}.row{display:flex;flex-wrap:wrap;gap:12px}svg{background:#fff}';
  return [
    '<!doctype html><html><head><meta charset="utf-8"><title>microserve bench</title>',
    `<style>${style}</style></head><body>`,
    '<h1>microserve bench</h1>',
    `<p>${esc(r.updatedAt)}<br>${esc(describeMachine(r))}<br>target: ${esc(r.config.topology ?? r.config.baseUrl ?? '')}, model ${esc(r.config.model)}<br>workload: ${esc(describeWorkload(r))}</p>`,
    '<p>Latencies in ms, measured by the client (send → first token, → last token); mean solid, P99 dashed.</p>',
    `<div class="row">${vsRate(r, 'e2elMs', 'E2EL vs request rate')}${vsRate(r, 'ttftMs', 'TTFT vs request rate')}</div>`,
    cdfs(r),
    '<h2>All metrics</h2>',
    table(r.points),
    '</body></html>',
    '',
  ].join('\n');
}
