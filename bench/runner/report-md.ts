/**
 * `results.md`: the run as Markdown tables (one row per strategy and rate), with the machine,
 * date and workload above them. Latencies in ms.
 */
import type { PointResult, ResultsFile } from './results.ts';

/** A number for a table: '-' for null/NaN, fixed decimals otherwise. */
export function fmt(v: number | null | undefined, digits = 1): string {
  return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : '-';
}

export const rateLabel = (r: number | 'inf') => (r === 'inf' ? 'inf' : String(r));

const spread = (plusMinus: unknown, ratio: unknown) => (typeof plusMinus === 'number' ? `±${plusMinus}` : ratio ? ` (±${ratio} share)` : '');

export function describeWorkload(r: ResultsFile): string {
  const c = r.config;
  const d = c.dataset;
  const shape =
    d.name === 'random'
      ? `input ${d.randomInputLen}${spread(d.randomInputRange, d.randomRangeRatio)}, output ${d.randomOutputLen}${spread(d.randomOutputRange, d.randomRangeRatio)}`
      : d.name === 'shared-prefix'
        ? `${d.gspNumGroups} prefixes of ${d.gspSystemPromptLen} tokens + questions of ${d.gspQuestionLen}, output ${d.gspOutputLen}`
        : d.name === 'sharegpt'
          ? `file ${d.path}`
          : 'ShareGPT-like lognormal lengths';
  return `${d.name} (${shape}); ${c.numPrompts} prompts, ${c.numWarmups} warm-ups, seed ${c.seed}${c.maxConcurrency ? `, max concurrency ${c.maxConcurrency}` : ''}`;
}

export function describeMachine(r: ResultsFile): string {
  const m = r.machine;
  const gpus = m.gpus.length > 0 ? `${m.gpus.length}× ${m.gpus[0]}` : 'no GPU';
  return `${m.hostname}: ${m.numCpus}× ${m.cpuModel}, ${m.memGiB} GiB, ${gpus}; ${m.platform} ${m.release}, Node ${m.node}`;
}

function row(p: PointResult): string {
  const cells = [
    p.strategy,
    rateLabel(p.requestRate),
    String(p.completed),
    String(p.failed),
    fmt(p.requestThroughput, 2),
    fmt(p.outputThroughput, 1),
    `${fmt(p.ttftMs.mean)} / ${fmt(p.ttftMs.median)} / ${fmt(p.ttftMs.p99)}`,
    `${fmt(p.tpotMs.mean, 2)} / ${fmt(p.tpotMs.p99, 2)}`,
    `${fmt(p.itlMs.mean, 2)} / ${fmt(p.itlMs.p99, 2)}`,
    `${fmt(p.e2elMs.mean)} / ${fmt(p.e2elMs.median)} / ${fmt(p.e2elMs.p90)} / ${fmt(p.e2elMs.p99)}`,
    p.goodput === null ? '-' : fmt(p.goodput, 2),
  ];
  return `| ${cells.join(' | ')} |`;
}

export function renderMarkdown(r: ResultsFile): string {
  const lines = [
    '# microserve bench',
    '',
    `- date: ${r.updatedAt}`,
    `- machine: ${describeMachine(r)}`,
    `- target: ${r.config.topology ? `topology ${r.config.topology}` : r.config.baseUrl}, model ${r.config.model}`,
    `- workload: ${describeWorkload(r)}`,
    ...(r.config.goodput ? [`- goodput SLOs (ms): ${Object.entries(r.config.goodput).map(([k, v]) => `${k} ≤ ${v}`).join(', ')}`] : []),
    '',
    '| strategy | rate (req/s) | done | failed | req/s | out tok/s | TTFT mean / p50 / p99 (ms) | TPOT mean / p99 (ms) | ITL mean / p99 (ms) | E2EL mean / p50 / p90 / p99 (ms) | goodput (req/s) |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...r.points.map(row),
    '',
  ];
  const switches = r.points.filter((p) => p.switch);
  if (switches.length > 0) {
    lines.push('Strategy switches (hot reload through the control plane, engines kept running):', '');
    for (const p of switches) {
      const s = p.switch!;
      lines.push(s.changes.length === 0 ? `- ${p.strategy}: already running` : `- → ${p.strategy}: reconfigured in ${fmt(s.reconfigureMs, 2)} ms (${s.changes.join('; ')})`);
    }
    lines.push('');
  }
  const checked = r.points.filter((p) => p.server);
  if (checked.length > 0) {
    lines.push('Server cross-check (router /metrics over each point):', '');
    lines.push('| strategy | rate | requests client / server | output tokens client / server | E2EL mean client / server (ms) | TTFT mean client / server (ms) | KV transfers (engines) |');
    lines.push('| --- | --- | --- | --- | --- | --- | --- |');
    for (const p of checked) {
      const s = p.server!;
      lines.push(
        `| ${p.strategy} | ${rateLabel(p.requestRate)} | ${p.completed + p.failed} / ${s.requests} | ${p.totalOutputTokens} / ${s.generationTokens} | ${fmt(p.e2elMs.mean)} / ${fmt(s.e2elMeanMs)} | ${fmt(p.ttftMs.mean)} / ${fmt(s.ttftMeanMs)} | ${transfersLabel(s.transfersByTransport)} |`,
      );
    }
    lines.push('');
  }
  return lines.join('\n');
}

function transfersLabel(t: Record<string, number> | undefined): string {
  const e = Object.entries(t ?? {});
  return e.length === 0 ? 'none' : e.map(([k, v]) => `${k} ${v}`).join(', ');
}
