/**
 * A bench run: build the request trace once, then for each strategy (switched by hot reload) and
 * each request rate, send the same trace, measure it from the client's timestamps, cross-check
 * with the router's /metrics, and write results.json / results.md / report.html after every
 * point. With `resume`, points already in results.json are skipped (same trace required).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MicroserveError } from '../../common/errors.ts';
import { attachCluster, startOwnCluster, type BenchCluster } from './cluster.ts';
import type { RequestTarget } from './client.ts';
import { SYNTHETIC, type BenchRequest, type SyntheticOptions } from './datasets.ts';
import { pointMetrics, type GoodputSlo } from './metrics.ts';
import { makeProgress } from './progress.ts';
import { renderHtml } from './report-html.ts';
import { fmt, rateLabel, renderMarkdown } from './report-md.ts';
import { machineInfo, pointKey, rateKey, readForResume, traceHash, writeResultsJson, SCHEMA_VERSION, type BenchConfig, type PointResult, type ResultsFile, type SwitchReport } from './results.ts';
import { scrape, serverDelta, type ServerCounts } from './server-metrics.ts';
import { checkTraceVocab, FALLBACK_TOKEN_ID_MAX, fetchServedModel, resolveTokenIdMax, serverEncoder, type ServedModel } from './served-model.ts';
import { shareGptDataset, type TextEncoder } from './sharegpt.ts';
import type { StrategySpec } from './strategies.ts';
import { runTrace, warmUp } from './trace.ts';

export const DEFAULT_TOPOLOGY = fileURLToPath(new URL('../../topology/default.yaml', import.meta.url));
export const DATASETS = ['random', 'chat', 'sharegpt', 'shared-prefix'] as const;

export interface BenchOptions extends Omit<SyntheticOptions, 'numPrompts' | 'seed'> {
  /** An existing cluster's router; otherwise the bench starts `topology`. */
  baseUrl?: string;
  /** [topology=topology/default.yaml] started with `microserve up` when no baseUrl. */
  topology?: string;
  /** Control-plane URL of an existing cluster (default: the run file of `up`). */
  control?: string;
  keepPorts?: boolean;
  apiKey?: string;
  /** [model=the server's first /v1/models entry] */
  model?: string;
  datasetName: (typeof DATASETS)[number];
  datasetPath?: string;
  sharegptOutputLen?: number;
  numPrompts: number;
  numWarmups: number;
  seed: number;
  /** Requests per second, Infinity for all at once; one point per rate. */
  requestRates: number[];
  maxConcurrency: number | null;
  /** [] = the running strategy as is. */
  strategies: StrategySpec[];
  /**
   * [flushCaches] empty the engines' prefix caches before each strategy (every strategy starts
   * cold on the same trace). Default: only on a cluster the bench starts itself; a running
   * cluster's caches (`baseUrl`) are flushed only when asked (`--flush-caches`).
   */
  flushCaches?: boolean;
  goodput: GoodputSlo | null;
  resultDir?: string;
  resume?: boolean;
  requestTimeoutMs?: number;
  /** Fields added to every request body (`--extra-body`). */
  extraBody?: Record<string, unknown>;
  /** [isProgress=true] progress bar on stderr (only on a terminal). */
  isProgress?: boolean;
}

/**
 * The request trace for the served model `m` (`o.tokenIdMax` must already be resolved against it:
 * resolveTokenIdMax). `encode`: the server's tokenizer for sharegpt text [the Llama 3 tokenizer].
 */
export async function buildTrace(o: BenchOptions, m: ServedModel, encode?: TextEncoder): Promise<BenchRequest[]> {
  if (o.datasetName === 'sharegpt') {
    if (!o.datasetPath) throw new MicroserveError('BAD_CONFIG', '--dataset-name sharegpt needs --dataset-path <ShareGPT JSON file>', { field: 'dataset-path' });
    const trace = await shareGptDataset({ path: o.datasetPath, numPrompts: o.numPrompts, seed: o.seed, outputLen: o.sharegptOutputLen, encode });
    checkTraceVocab(trace, m, `--dataset-path ${o.datasetPath} tokenized ${encode ? 'by the server' : 'with the Llama 3 tokenizer (the server has no /tokenize)'}`);
    return trace;
  }
  const make = SYNTHETIC[o.datasetName];
  if (!make) throw new MicroserveError('BAD_CONFIG', `--dataset-name must be one of ${DATASETS.join(', ')}`, { field: 'dataset-name' });
  return make({ ...o, numPrompts: o.numPrompts, seed: o.seed });
}

function datasetConfig(o: BenchOptions): BenchConfig['dataset'] {
  switch (o.datasetName) {
    case 'random':
      return {
        name: 'random',
        randomInputLen: o.randomInputLen ?? 1024,
        randomOutputLen: o.randomOutputLen ?? 128,
        randomRangeRatio: o.randomRangeRatio ?? 0,
        randomInputRange: o.randomInputRange ?? null,
        randomOutputRange: o.randomOutputRange ?? null,
        tokenIdMax: o.tokenIdMax ?? FALLBACK_TOKEN_ID_MAX,
      };
    case 'shared-prefix':
      return { name: 'shared-prefix', gspNumGroups: o.gspNumGroups ?? 4, gspSystemPromptLen: o.gspSystemPromptLen ?? 2048, gspQuestionLen: o.gspQuestionLen ?? 128, gspOutputLen: o.gspOutputLen ?? 256 };
    case 'sharegpt':
      return { name: 'sharegpt', path: o.datasetPath, sharegptOutputLen: o.sharegptOutputLen ?? null };
    default:
      return { name: o.datasetName, tokenIdMax: o.tokenIdMax ?? FALLBACK_TOKEN_ID_MAX };
  }
}

/** Waits (≤ 2 s) until the server has counted `n` more finished requests than `before`, then scrapes. */
async function settledScrape(baseUrl: string, before: ServerCounts | null, n: number): Promise<ServerCounts | null> {
  if (!before) return null;
  const t0 = Date.now();
  for (;;) {
    const now = await scrape(baseUrl);
    if (!now || now.requests - before.requests >= n || Date.now() - t0 > 2000) return now;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs the whole sweep; `print` gets one human line per event (the CLI writes them to stdout). */
export async function runBench(given: BenchOptions, print: (line: string) => void = () => {}): Promise<ResultsFile> {
  if (given.datasetName === 'sharegpt' && !given.datasetPath) throw new MicroserveError('BAD_CONFIG', '--dataset-name sharegpt needs --dataset-path <ShareGPT JSON file>', { field: 'dataset-path' });
  let o = given;
  const cluster: BenchCluster = o.baseUrl ? await attachCluster(o.baseUrl, { control: o.control, apiKey: o.apiKey }) : await startOwnCluster(o.topology ?? DEFAULT_TOPOLOGY, { keepPorts: o.keepPorts });
  const progress = makeProgress(o.isProgress ?? true);
  const isFlushing = o.flushCaches ?? !o.baseUrl;
  // ctrl-C or a kill ends the run, not the cluster: the strategy found is put back first
  let isFinished = false;
  const finish = async () => {
    if (isFinished) return;
    isFinished = true;
    progress.stop();
    try {
      const line = await cluster.restore();
      if (line) print(line);
    } catch (e) {
      print(`could not restore the cluster's strategy: ${(e as Error).message}`);
    }
    await cluster.stop();
  };
  const onSignal = (sig: NodeJS.Signals) => {
    print(`${sig}: stopping the bench`);
    void finish().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // the trace is built for the served model: prompt ids inside its vocabulary, its tokenizer
    const apiKey = o.apiKey ?? cluster.apiKey;
    const served = await fetchServedModel(cluster.baseUrl, apiKey, o.model);
    const isSynthetic = o.datasetName !== 'sharegpt';
    if (isSynthetic) {
      o = { ...o, tokenIdMax: resolveTokenIdMax(o.tokenIdMax, served) };
      print(`model ${served.id}: prompt token ids drawn from [0, ${o.tokenIdMax})${given.tokenIdMax === undefined ? (served.vocabSize === null ? ' (the server does not report its vocabulary: the Llama 3 default)' : ' (its ordinary tokens)') : ''}`);
    }
    const encode = isSynthetic ? undefined : ((await serverEncoder(cluster.baseUrl, served, apiKey)) ?? undefined);
    const requests = await buildTrace(o, served, encode);
    const target: RequestTarget = { baseUrl: cluster.baseUrl, model: served.id, apiKey, timeoutMs: o.requestTimeoutMs, extraBody: o.extraBody };
    const running = cluster.topology?.router;
    const strategies: StrategySpec[] = o.strategies.length > 0 ? o.strategies : [{ label: running?.strategy ?? 'current', name: running?.strategy ?? 'current', params: running?.params ?? {} }];
    const config: BenchConfig = {
      baseUrl: o.baseUrl ?? null,
      topology: o.baseUrl ? null : (o.topology ?? DEFAULT_TOPOLOGY),
      model: target.model,
      dataset: datasetConfig(o),
      numPrompts: o.numPrompts,
      numWarmups: o.numWarmups,
      seed: o.seed,
      requestRates: o.requestRates.map(rateKey),
      maxConcurrency: o.maxConcurrency,
      goodput: o.goodput,
      strategies: strategies.map((s) => s.label),
      traceHash: traceHash(requests),
      extraBody: o.extraBody ?? null,
    };
    const now = new Date().toISOString();
    const prior = o.resume && o.resultDir ? readForResume(o.resultDir, config) : null;
    const results: ResultsFile = prior
      ? { ...prior, config, updatedAt: now }
      : { schemaVersion: SCHEMA_VERSION, tool: 'microserve bench', createdAt: now, updatedAt: now, machine: machineInfo(), config, points: [] };
    const done = new Set(results.points.map((p) => pointKey(p.strategy, p.requestRate, p.maxConcurrency)));

    for (const s of strategies) {
      const todo = o.requestRates.filter((r) => !done.has(pointKey(s.label, rateKey(r), o.maxConcurrency)));
      if (todo.length === 0) {
        print(`${s.label}: every point already in results.json, skipped`);
        continue;
      }
      let switchReport: SwitchReport | null = null;
      if (o.strategies.length > 0) {
        const r = (await cluster.switchStrategy(s.name, s.params)) as Partial<SwitchReport> | null;
        switchReport = { version: r?.version ?? null, changes: r?.changes ?? [], reconfigureMs: r?.reconfigureMs ?? null, drainMs: r?.drainMs ?? null };
        print(`strategy ${s.label}: ${switchReport.changes.length === 0 ? 'already running' : `applied in ${fmt(switchReport.reconfigureMs, 2)} ms`}`);
      }
      // every strategy starts with cold prefix caches: the trace is the same, so a cache kept
      // from the previous strategy would hand the later one free prefix hits
      const numFlushed = !isFlushing
        ? null
        : await cluster.flushCaches().catch((e) => {
            print(`${s.label}: could not flush the engines' prefix caches: ${(e as Error).message}`);
            return null;
          });
      if (numFlushed !== null) print(`${s.label}: flushed ${numFlushed} cached KV pages`);
      const numWarmupFailed = await warmUp(target, requests, o.numWarmups);
      if (numWarmupFailed > 0) print(`${s.label}: ${numWarmupFailed} of ${o.numWarmups} warm-up requests failed`);
      for (const rate of todo) {
        const before = await scrape(cluster.baseUrl);
        const startedAt = new Date().toISOString();
        progress.start(`${s.label} @ ${rateLabel(rateKey(rate))} req/s`, requests.length);
        const trace = await runTrace(target, requests, { rate, maxConcurrency: o.maxConcurrency, seed: o.seed, onDone: (x) => progress.tick(x.isOk) }).finally(() => progress.stop());
        const after = await settledScrape(cluster.baseUrl, before, trace.outcomes.length);
        const ok = trace.outcomes.filter((x) => x.isOk).sort((a, b) => a.startMs + a.e2elMs - (b.startMs + b.e2elMs));
        const point: PointResult = {
          strategy: s.label,
          strategyName: s.name,
          params: s.params,
          requestRate: rateKey(rate),
          maxConcurrency: o.maxConcurrency,
          numPrompts: requests.length,
          startedAt,
          ...pointMetrics(trace.outcomes, trace.durationS, o.goodput),
          server: before && after ? serverDelta(before, after) : null,
          switch: switchReport,
          samples: { ttftMs: ok.map((x) => x.ttftMs!), tpotMs: ok.map((x) => x.tpotMs), e2elMs: ok.map((x) => x.e2elMs) },
        };
        switchReport = null;
        results.points.push(point);
        results.updatedAt = new Date().toISOString();
        if (o.resultDir) writeReports(o.resultDir, results);
        print(
          `${s.label} @ ${rateLabel(point.requestRate)} req/s: ${point.completed} done, ${point.failed} failed, ${fmt(point.requestThroughput, 2)} req/s, ` +
            `TTFT mean ${fmt(point.ttftMs.mean)} ms, E2EL mean ${fmt(point.e2elMs.mean)} / P99 ${fmt(point.e2elMs.p99)} ms`,
        );
        // the failures' causes, most frequent first (all of them are in results.json)
        for (const [error, n] of Object.entries(point.errors).sort((a, b) => b[1] - a[1]).slice(0, 3)) print(`  ${n} failed: ${error}`);
      }
    }
    return results;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await finish();
  }
}

/** Writes results.json, results.md and report.html into `dir`. */
export function writeReports(dir: string, r: ResultsFile): void {
  writeResultsJson(dir, r);
  writeFileSync(join(dir, 'results.md'), renderMarkdown(r));
  writeFileSync(join(dir, 'report.html'), renderHtml(r));
}
