/**
 * `results.json`: the stable, documented record of a bench run (schema in bench/runner/README.md;
 * `schemaVersion` changes only when a field changes meaning or goes away). Rewritten after every
 * point so a run that stops still keeps what it measured, and `--resume` can skip those points.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { cpus, hostname, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { MicroserveError } from '../../common/errors.ts';
import { listGpus } from '../../topology/gpus.ts';
import type { BenchRequest } from './datasets.ts';
import type { GoodputSlo, PointMetrics } from './metrics.ts';
import type { ServerPoint } from './server-metrics.ts';

export const SCHEMA_VERSION = 1;

export interface Machine {
  hostname: string;
  platform: string;
  release: string;
  arch: string;
  cpuModel: string;
  numCpus: number;
  memGiB: number;
  node: string;
  /** GPU names from `nvidia-smi -L` ([] without). */
  gpus: string[];
}

export interface BenchConfig {
  baseUrl: string | null;
  topology: string | null;
  model: string;
  dataset: Record<string, unknown> & { name: string };
  numPrompts: number;
  numWarmups: number;
  seed: number;
  /** `'inf'` for Infinity. */
  requestRates: (number | 'inf')[];
  maxConcurrency: number | null;
  goodput: GoodputSlo | null;
  strategies: string[];
  /** sha256 of the trace (prompt ids and output lengths): `--resume` requires the same. */
  traceHash: string;
  /** `--extra-body`: fields added to every request (null: none). */
  extraBody?: Record<string, unknown> | null;
}

/** What `control` reported for a strategy switch (topology/apply.ts ApplyReport, trimmed). */
export interface SwitchReport {
  version: number | null;
  /** [] when the strategy was already running (nothing applied). */
  changes: string[];
  /** Receipt of the topology → router ack of the new plan. */
  reconfigureMs: number | null;
  drainMs: number | null;
}

export interface PointResult extends PointMetrics {
  /** As given in --strategies, e.g. `balanced-pd:0.1` (or the running one's name). */
  strategy: string;
  strategyName: string;
  params: Record<string, unknown>;
  requestRate: number | 'inf';
  maxConcurrency: number | null;
  numPrompts: number;
  startedAt: string;
  /** The router's /metrics over the point (after − before); null when it has none. */
  server: ServerPoint | null;
  /** The hot reload that switched to this strategy (on its first point of the run), or null. */
  switch: SwitchReport | null;
  /** Per completed request, in completion order: for CDFs and re-analysis. */
  samples: { ttftMs: number[]; tpotMs: (number | null)[]; e2elMs: number[] };
}

export interface ResultsFile {
  schemaVersion: number;
  tool: 'microserve bench';
  createdAt: string;
  updatedAt: string;
  machine: Machine;
  config: BenchConfig;
  points: PointResult[];
}

export function machineInfo(): Machine {
  const c = cpus();
  return {
    hostname: hostname(),
    platform: process.platform,
    release: release(),
    arch: process.arch,
    cpuModel: c[0]?.model?.trim() ?? 'unknown',
    numCpus: c.length,
    memGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    gpus: listGpus(),
  };
}

export function traceHash(requests: readonly BenchRequest[]): string {
  const h = createHash('sha256');
  for (const r of requests) h.update(`${r.outputLen}:${r.promptIds.join(',')};`);
  return h.digest('hex');
}

export const rateKey = (r: number): number | 'inf' => (Number.isFinite(r) ? r : 'inf');
export const pointKey = (strategy: string, rate: number | 'inf', maxConcurrency: number | null) => `${strategy}@${rate}/${maxConcurrency ?? '-'}`;

/** The results of an earlier run in `dir` to resume, or null; refuses one made with another trace. */
export function readForResume(dir: string, config: BenchConfig): ResultsFile | null {
  const path = join(dir, 'results.json');
  if (!existsSync(path)) return null;
  const r = JSON.parse(readFileSync(path, 'utf8')) as ResultsFile;
  if (r.schemaVersion !== SCHEMA_VERSION) throw new MicroserveError('BAD_CONFIG', `${path} has schema version ${r.schemaVersion}, this tool writes ${SCHEMA_VERSION}: use another --result-dir`);
  const diffs: string[] = (['traceHash', 'numWarmups', 'model'] as const).filter((k) => r.config[k] !== config[k]);
  if (JSON.stringify(r.config.extraBody ?? null) !== JSON.stringify(config.extraBody ?? null)) diffs.push('extraBody');
  if (diffs.length > 0) throw new MicroserveError('BAD_CONFIG', `${path} was made with a different ${diffs.join(', ')}: use another --result-dir, or drop --resume to start over`);
  return r;
}

/** Writes `results.json` atomically (temp file + rename). NaN becomes null. */
export function writeResultsJson(dir: string, r: ResultsFile): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'results.json');
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(r, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n');
  renameSync(tmp, path);
  return path;
}
