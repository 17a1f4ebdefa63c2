/**
 * The topology file's schema (zod): the shape of every section, its defaults, and the lists the
 * loader's messages quote. Every object is strict: an unknown field (a typo) is an error, never
 * silently ignored. Semantic checks that need more than one field (duplicate names, hosts,
 * devices, model and strategy resolution) live in `validate.ts`.
 *
 * Defaults, as documented in topology/README.md:
 * - `transport: auto`, `hosts: [{ name: local }]`
 * - `control: { host: 127.0.0.1, port: 7700, maxFrameBytes: 67108864 }`
 * - `router: { host: 127.0.0.1, port: 8000, strategy: dp, params: {} }` (`apiKey`, `maxQueue`: none)
 * - engine: `{ role: both, device: cpu, host: local, kvPages: auto (GPU) / 512 (CPU), pageSize: 16,
 *   maxBatchTokens: 1024 (GPU) / 512 (CPU), maxNumSeqs: 256, gpuMemoryUtilization: 0.9, threads: 0 }`
 *   (the kvPages and maxBatchTokens defaults depend on the device, so validate.ts fills them in)
 * `model` and `engines` (at least one, each with a `name`) are required.
 */
import { z } from 'zod';
import { TRANSPORTS } from '../common/transport.ts';
import { BUILTIN_STRATEGIES } from '../actors/router/strategies/index.ts';

export const ROLES = ['prefill', 'decode', 'both'] as const;
export const MODEL_PRESETS = ['tiny', 'llama-3.1-8b'] as const;
/** kvPages of a CPU engine that does not set it, and what `auto` means on CPU. */
export const CPU_KV_PAGES = 512;
/** The host the control process runs on; always known, never needs an entry in `hosts`. */
export const LOCAL_HOST = 'local';

/** Engine and host names: what actor paths (`engine/<name>`) accept. */
export const NAME_RE = /^[a-zA-Z0-9_.-]+$/;

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);
const name = () => z.string().regex(NAME_RE);
const port = () => int(0, 65535);

export const EngineSchema = z.strictObject({
  name: name(),
  role: z.enum(ROLES).default('both'),
  device: z.string().default('cpu'),
  host: name().default(LOCAL_HOST),
  kvPages: z.union([int(1), z.literal('auto')]).optional(),
  pageSize: int(1, 4096).default(16),
  maxBatchTokens: int(1).optional(),
  maxNumSeqs: int(1, 65536).default(256),
  gpuMemoryUtilization: z.number().gt(0).max(1).default(0.9),
  threads: int(0, 4096).default(0),
  grammarWorkers: int(1, 64).optional(),
});

export const RouterSchema = z.strictObject({
  host: z.string().min(1).default('127.0.0.1'),
  port: port().default(8000),
  strategy: z.string().min(1).default('dp'),
  params: z.record(z.string(), z.unknown()).default({}),
  apiKey: z.string().min(1).optional(),
  maxQueue: int(1).optional(),
});

export const ControlSchema = z.strictObject({
  host: z.string().min(1).default('127.0.0.1'),
  port: port().default(7700),
  maxFrameBytes: int(1024).default(64 * 1024 * 1024),
});

export const HostSchema = z.strictObject({ name: name() });

export const TopologySchema = z.strictObject({
  model: z.string().min(1),
  transport: z.enum(TRANSPORTS).default('auto'),
  control: ControlSchema.prefault({}),
  router: RouterSchema.prefault({}),
  hosts: z.array(HostSchema).default([{ name: LOCAL_HOST }]),
  engines: z.array(EngineSchema).min(1),
});

/** The fields each section accepts, for "did you mean" hints on typos. */
export function fieldsAt(path: readonly PropertyKey[]): string[] {
  const section = path.filter((p) => typeof p === 'string');
  const last = section[section.length - 1];
  if (section.length === 0) return Object.keys(TopologySchema.shape);
  if (last === 'engines') return Object.keys(EngineSchema.shape);
  if (last === 'router') return Object.keys(RouterSchema.shape);
  if (last === 'control') return Object.keys(ControlSchema.shape);
  if (last === 'hosts') return Object.keys(HostSchema.shape);
  return [];
}

/** What each field expects, in words, for messages about wrong values. */
export const EXPECTED: Record<string, string> = {
  name: 'a name of letters, digits, _ . -',
  host: 'a host name',
  role: `${ROLES.slice(0, -1).join(', ')} or ${ROLES[ROLES.length - 1]}`,
  transport: `${TRANSPORTS.slice(0, -1).join(', ')} or ${TRANSPORTS[TRANSPORTS.length - 1]}`,
  device: 'cpu or cuda:N',
  port: 'an integer port in [0, 65535] (0 picks a free one)',
  kvPages: 'an integer >= 1 or auto',
  maxNumSeqs: 'an integer in [1, 65536]',
  gpuMemoryUtilization: 'a number in (0, 1]',
  pageSize: 'an integer in [1, 4096]',
  maxBatchTokens: 'an integer >= 1',
  threads: 'an integer >= 0 (0 = all cores)',
  grammarWorkers: 'an integer in [1, 64]',
  maxFrameBytes: 'an integer >= 1024',
  model: `a preset (${MODEL_PRESETS.join(', ')}) or a checkpoint folder`,
  strategy: `a built-in strategy (${BUILTIN_STRATEGIES.join(', ')}) or a module path`,
  params: 'a mapping of strategy parameters',
  apiKey: 'a non-empty string',
  maxQueue: 'an integer >= 1 (omit for unlimited)',
  engines: 'a list of at least one engine',
  hosts: 'a list of hosts ({ name })',
};
