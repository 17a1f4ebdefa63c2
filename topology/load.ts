/**
 * Loading a topology file: YAML → schema (schema.ts) → semantic checks (validate.ts) → Topology.
 * Every refusal is `MicroserveError('TOPOLOGY_INVALID')` whose message names the field path and
 * the line, e.g. `engines[1].role: unknown role 'decoder' (expected prefill, decode or both) at
 * line 12`; `details` carries `{ field, line, source, problems }` (all problems found, first one
 * in the message). Relative paths (model folder, strategy module) resolve against the file's
 * folder and come out absolute.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import type { $ZodIssue } from 'zod/v4/core';
import { MicroserveError } from '../common/errors.ts';
import { formatPath, Positions, type FieldPath } from './positions.ts';
import { EXPECTED, fieldsAt, TopologySchema } from './schema.ts';
import type { Topology } from './types.ts';
import { validateTopology, type Problem } from './validate.ts';

export interface LoadOptions {
  /** [numGpus=detectGpuCount()] GPUs on this host: `cuda:N` needs N < numGpus. */
  numGpus?: number;
  /** [baseDir=dirname(sourcePath) or cwd] where relative model and strategy paths resolve. */
  baseDir?: string;
}

/** One problem found in a topology file, positioned. */
export interface TopologyProblem {
  field: string;
  line: number;
  message: string;
}

/** Reads and validates a topology file. Throws TOPOLOGY_INVALID (see the module comment). */
export function loadTopology(path: string, opts: LoadOptions = {}): Topology {
  const abs = resolve(path);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    throw new MicroserveError('TOPOLOGY_INVALID', `cannot read topology file ${abs}: ${(e as Error).message}`, { source: abs });
  }
  return parseTopology(text, abs, opts);
}

/** Validates topology YAML text; `sourcePath` (if any) is recorded as `source` and anchors relative paths. */
export function parseTopology(text: string, sourcePath?: string, opts: LoadOptions = {}): Topology {
  const source = sourcePath ? resolve(sourcePath) : undefined;
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    const problems = doc.errors.map((e) => ({ field: '(yaml)', line: e.linePos?.[0].line ?? 1, message: `bad YAML: ${firstLine(e.message).replace(/ at line \d+, column \d+:?$/, '')}` }));
    throw invalid(problems, source, (p) => `${p.message} at line ${p.line}`);
  }
  const pos = new Positions(doc, lines);
  const raw = doc.toJS() as unknown;
  if (raw === null || raw === undefined) throw invalid([{ field: '(top level)', line: 1, message: 'the topology file is empty' }], source);
  const parsed = TopologySchema.safeParse(raw);
  if (!parsed.success) throw invalid(parsed.error.issues.flatMap((i) => fromIssue(i, raw)).map((p) => place(p, pos)), source);
  const baseDir = opts.baseDir ?? (source ? dirname(source) : process.cwd());
  const topology = { ...parsed.data, ...(source ? { source } : {}) } as Topology; // validate fills kvPages defaults
  const problems = validateTopology(topology, { baseDir, numGpus: opts.numGpus });
  if (problems.length > 0) throw invalid(problems.map((p) => place(p, pos)), source);
  return topology;
}

function place(p: Problem, pos: Positions): TopologyProblem {
  return { field: formatPath(p.path), line: pos.line(p.path, p.isKey), message: p.message };
}

function invalid(problems: TopologyProblem[], source: string | undefined, fmt = (p: TopologyProblem) => `${p.field}: ${p.message} at line ${p.line}`): MicroserveError {
  const [first, ...rest] = [...problems].sort((a, b) => a.line - b.line);
  let message = fmt(first);
  if (rest.length > 0) message += `\n  also: ${rest.map(fmt).join('\n  also: ')}`;
  return new MicroserveError('TOPOLOGY_INVALID', message, { field: first.field, line: first.line, source, problems });
}

const firstLine = (s: string) => s.split('\n')[0].trim();

function valueAt(raw: unknown, path: FieldPath): unknown {
  let v = raw;
  for (const p of path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

const show = (v: unknown) => (typeof v === 'string' ? `'${v}'` : JSON.stringify(v) ?? String(v));

/** A zod issue, in the words of this file format. */
function fromIssue(issue: $ZodIssue, raw: unknown): Problem[] {
  const path = issue.path as PropertyKey[];
  const key = String([...path].reverse().find((p) => typeof p === 'string') ?? '');
  const expected = EXPECTED[key];
  const value = valueAt(raw, path);
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((k) => ({ path: [...path, k], isKey: true, message: unknownField(k, fieldsAt(path)) }));
    case 'invalid_value':
      return [{ path, message: `unknown ${key} ${show(value)} (expected ${expected ?? issue.values.join(', ')})` }];
    case 'invalid_type':
      if (value === undefined) return [{ path, message: `required${expected ? ` (${expected})` : ''}` }];
      return [{ path, message: `expected ${expected ?? issue.expected}, got ${show(value)}` }];
    case 'too_small':
      if (key === 'engines' && typeof path[path.length - 1] === 'string') return [{ path, message: 'needs at least one engine' }];
      return [{ path, message: `expected ${expected ?? `at least ${issue.minimum}`}, got ${show(value)}` }];
    default:
      return [{ path, message: `expected ${expected ?? 'a valid value'}, got ${show(value)}` }];
  }
}

function unknownField(k: string, known: string[]): string {
  const near = known.map((f) => ({ f, d: editDistance(k.toLowerCase(), f.toLowerCase()) })).sort((a, b) => a.d - b.d)[0];
  if (near && near.d <= Math.max(2, Math.floor(k.length / 3))) return `unknown field '${k}' (did you mean '${near.f}'?)`;
  return `unknown field '${k}'${known.length ? ` (expected one of ${known.join(', ')})` : ''}`;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}
