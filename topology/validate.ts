/**
 * Semantic checks of a schema-valid topology: what one field cannot say alone. Returns problems
 * (path + message) for load.ts to position; resolves the model folder and strategy module paths
 * to absolute paths in place.
 *
 * Checks: unique engine and host names; every engine's host is known (`local` always is);
 * devices are `cpu` or `cuda:N` with N below this host's GPU count (engines on other hosts get
 * the syntax check only: their GPUs are not visible from here); the model is a preset or a
 * folder with `config.json`; the strategy is built in or an existing module, and a built-in's
 * params pass its `validateParams`; at least one engine can generate; `cuda-ipc` and `nvshmem`
 * transports have every engine on a GPU; router and control do not share a port.
 */
import { existsSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { builtinParamsCheck, resolveStrategy, type StrategySource } from '../actors/router/strategy-loader.ts';
import { shippedModelFolder, shippedModels } from '../native/model-source.ts';
import { detectGpuCount } from './gpus.ts';
import type { FieldPath } from './positions.ts';
import { nvshmemJobs } from './diff.ts';
import { defaultMaxBatchTokens } from '../actors/messages.ts';
import { CPU_KV_PAGES, EXPECTED, LOCAL_HOST, MODEL_PRESETS } from './schema.ts';
import type { Topology } from './types.ts';

export interface Problem {
  path: FieldPath;
  message: string;
  /** Point at the key rather than the value (unknown fields). */
  isKey?: boolean;
}

export interface ValidateOptions {
  baseDir: string;
  /** [numGpus=detectGpuCount()] */
  numGpus?: number;
}

const DEVICE_RE = /^(cpu|cuda:(\d+))$/;

/** Runs every check; `t.model` and `t.router.strategy` become absolute paths when they are paths. */
export function validateTopology(t: Topology, opts: ValidateOptions): Problem[] {
  const problems: Problem[] = [];
  const add = (path: FieldPath, message: string) => problems.push({ path, message });

  const hostIndex = new Map<string, number>();
  t.hosts.forEach((h, i) => {
    if (hostIndex.has(h.name)) add(['hosts', i, 'name'], `duplicate host name '${h.name}' (first at hosts[${hostIndex.get(h.name)}])`);
    else hostIndex.set(h.name, i);
  });
  const knownHosts = [...new Set([LOCAL_HOST, ...hostIndex.keys()])];

  let numGpus: number | undefined = opts.numGpus;
  const engineIndex = new Map<string, number>();
  t.engines.forEach((e, i) => {
    if (engineIndex.has(e.name)) add(['engines', i, 'name'], `duplicate engine name '${e.name}' (first at engines[${engineIndex.get(e.name)}])`);
    else engineIndex.set(e.name, i);
    if (!knownHosts.includes(e.host)) add(['engines', i, 'host'], `unknown host '${e.host}' (known: ${knownHosts.join(', ')}; list it under hosts)`);
    const m = DEVICE_RE.exec(e.device);
    if (!m) return add(['engines', i, 'device'], `unknown device '${e.device}' (expected ${EXPECTED.device})`);
    if (m[2] === undefined || e.host !== LOCAL_HOST) return;
    numGpus ??= detectGpuCount();
    const n = Number(m[2]);
    if (n >= numGpus) {
      const has = numGpus === 0 ? 'this host has no GPU (nvidia-smi -L lists none)' : numGpus === 1 ? 'this host has 1 GPU (cuda:0)' : `this host has ${numGpus} GPUs (cuda:0 to cuda:${numGpus - 1})`;
      add(['engines', i, 'device'], `device '${e.device}' does not exist: ${has}`);
    }
  });

  if (!t.engines.some((e) => e.role !== 'prefill')) add(['engines'], 'no engine can generate: every engine has role prefill (give one role decode or both)');
  if (t.transport === 'cuda-ipc' || t.transport === 'nvshmem') {
    const i = t.engines.findIndex((e) => !e.device.startsWith('cuda:'));
    if (i >= 0) add(['transport'], `transport '${t.transport}' needs every engine on a GPU (engines[${i}] '${t.engines[i].name}' is on ${t.engines[i].device})`);
  }
  // kvPages default: auto on a GPU, 512 on CPU (where auto also means 512) and for the members of
  // an NVSHMEM job, whose equal pools are allocated before the weights load (auto is refused there)
  const jobs = t.transport === 'nvshmem' ? nvshmemJobs(t) : new Map<string, string>();
  const isJobMember = (name: string) => jobs.has(name) && t.engines.filter((x) => jobs.get(x.name) === jobs.get(name)).length > 1;
  t.engines.forEach((e, i) => {
    if ((e as { maxBatchTokens?: unknown }).maxBatchTokens === undefined) e.maxBatchTokens = defaultMaxBatchTokens(e.device);
    if ((e as { kvPages?: unknown }).kvPages === undefined) e.kvPages = e.device.startsWith('cuda:') && !isJobMember(e.name) ? 'auto' : CPU_KV_PAGES;
    else if (e.kvPages === 'auto' && isJobMember(e.name)) {
      add(['engines', i, 'kvPages'], `kvPages auto cannot be used with transport 'nvshmem' (the GPU engines of host '${e.host}' form one job whose equal KV pools are allocated before the weights load): set kvPages`);
    }
  });
  if (t.transport === 'nvshmem') {
    // nvshmem_malloc is collective: the members of a job (GPU engines of one host) need equal pools
    for (const host of new Set(t.engines.map((e) => e.host))) {
      const gpu = t.engines.map((e, i) => ({ e, i })).filter(({ e }) => e.host === host && e.device.startsWith('cuda:'));
      const odd = gpu.find(({ e }) => (e.kvPages ?? 0) !== (gpu[0].e.kvPages ?? 0) || (e.pageSize ?? 0) !== (gpu[0].e.pageSize ?? 0));
      if (odd) {
        add(['engines', odd.i, 'kvPages'], `transport 'nvshmem' needs equal KV pools on one host: '${odd.e.name}' has kvPages ${odd.e.kvPages}, pageSize ${odd.e.pageSize}; '${gpu[0].e.name}' has kvPages ${gpu[0].e.kvPages}, pageSize ${gpu[0].e.pageSize}`);
      }
    }
  }
  if (t.router.port !== 0 && t.router.port === t.control.port) add(['router', 'port'], `router and control both use port ${t.router.port}`);

  const model = resolveModel(t.model, opts.baseDir);
  if ('error' in model) add(['model'], model.error);
  else t.model = model.value;

  let strategy: StrategySource | null = null;
  try {
    strategy = resolveStrategy(t.router.strategy, opts.baseDir);
  } catch (e) {
    add(['router', 'strategy'], (e as Error).message);
  }
  if (strategy) {
    t.router.strategy = 'builtin' in strategy ? strategy.builtin : strategy.path;
    try {
      builtinParamsCheck(strategy)?.(t.router.params);
    } catch (e) {
      const field = (e as { info?: { field?: string } }).info?.field ?? 'params';
      add(['router', ...field.split('.')], (e as Error).message);
    }
  }
  return problems;
}

type Resolved = { value: string } | { error: string };

/** A preset name as is; a folder (with config.json) as an absolute path; a shipped model's name (native/model-source.ts) as its folder. */
export function resolveModel(model: string, baseDir: string): Resolved {
  if ((MODEL_PRESETS as readonly string[]).includes(model)) return { value: model };
  const path = isAbsolute(model) ? model : resolve(baseDir, model);
  if (!existsSync(path)) {
    const shipped = shippedModelFolder(model);
    if (shipped) return { value: shipped };
    // a bare name may have meant a shipped model: list them; a path clearly meant a folder
    const shippedNote = /[\\/]/.test(model) ? '' : `, a shipped model (${shippedModels().join(', ') || 'none'})`;
    return { error: `'${model}' is neither a preset (${MODEL_PRESETS.join(', ')})${shippedNote} nor an existing folder (${path} does not exist)` };
  }
  if (!statSync(path).isDirectory()) return { error: `'${model}' must be a checkpoint folder (${path} is a file)` };
  if (!existsSync(join(path, 'config.json'))) return { error: `model folder ${path} has no config.json` };
  return { value: path };
}
