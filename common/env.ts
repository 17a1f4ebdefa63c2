/**
 * The one registry of environment knobs (like vLLM's `envs.py`): every `MICROSERVE_*` / `MS_*`
 * variable is declared here once, with its type, default and a line of doc, and this is the only
 * module that reads them from `process.env`. Values are read when asked for (a test or a command
 * that sets a variable before it starts its work is seen); a malformed value is a BAD_CONFIG
 * error that names the variable. Library code takes explicit options first and falls back to
 * these (e.g. `openModel`'s `native` options over the `MS_*` knobs below).
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { MicroserveError } from './errors.ts';

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const CPU_ISAS = ['auto', 'base', 'avx2', 'avx512'] as const;
export type CpuIsa = (typeof CPU_ISAS)[number];

interface Knob<T> {
  /** The environment variable. */
  name: string;
  doc: string;
  /** Used when the variable is unset or empty. */
  default: () => T;
  parse: (raw: string, name: string) => T;
}

function bad(name: string, raw: string, expected: string): never {
  throw new MicroserveError('BAD_CONFIG', `${name}=${JSON.stringify(raw)}: expected ${expected}`, { field: name });
}
const str = (raw: string): string => raw;
const bool = (raw: string, name: string): boolean => (raw === '1' || raw === 'true' ? true : raw === '0' || raw === 'false' ? false : bad(name, raw, '1 or 0'));
const int = (min: number) => (raw: string, name: string): number => {
  const v = Number(raw);
  return Number.isInteger(v) && v >= min ? v : bad(name, raw, `an integer >= ${min}`);
};
const oneOf = <T extends string>(values: readonly T[]) => (raw: string, name: string): T =>
  (values as readonly string[]).includes(raw) ? (raw as T) : bad(name, raw, values.join(', '));
const knob = <T>(name: string, def: () => T, parse: Knob<T>['parse'], doc: string): Knob<T> => ({ name, doc, default: def, parse });
const none = (): undefined => undefined;

/** Every knob, by the key code asks for it with. */
export const KNOBS = {
  // processes and the CLI
  logLevel: knob<LogLevel>('MICROSERVE_LOG', () => 'info', oneOf(LOG_LEVELS), 'log level of the one logger (common/log.ts)'),
  debug: knob('MICROSERVE_DEBUG', () => false, (raw) => raw !== '0', 'the CLI prints stack traces of failures (any value but 0)'),
  home: knob('MICROSERVE_HOME', () => join(homedir(), '.microserve'), str, "folder of `up`'s run file (token, control URL)"),
  token: knob<string | undefined>('MICROSERVE_TOKEN', none, str, 'cluster token; else the run file\'s'),
  controlUrl: knob<string | undefined>('MICROSERVE_CONTROL', none, str, 'control process ws URL for CLI commands and engine processes; else the run file\'s'),
  bindHost: knob('MICROSERVE_BIND', () => '127.0.0.1', str, 'address supervised processes listen on'),
  joinWaitS: knob('MICROSERVE_JOIN_WAIT_S', () => 0, int(0), 'seconds a supervised process keeps trying to reach control when it starts (an agent sets its --wait)'),
  numGpus: knob<number | undefined>('MICROSERVE_NUM_GPUS', none, int(0), 'GPUs of this host; else `nvidia-smi -L` is asked'),
  nativeAddon: knob('MICROSERVE_NATIVE_ADDON', () => './build/Release/microserve_native.node', str, 'the native addon file (relative to native/), e.g. a sanitizer build'),
  // engine
  testHooks: knob('MICROSERVE_TEST_HOOKS', () => false, bool, 'TEST ONLY: engines accept `test_fail_steps` (forced step failures)'),
  overlapSteps: knob('MICROSERVE_OVERLAP', () => true, bool, 'engines submit step t+1 before sending step t\'s tokens (0: after; measures what the overlap is worth)'),
  // native backend options (BackendOptions in native/src/backend.h), read once per backend
  cpuIsa: knob<CpuIsa>('MS_CPU_ISA', () => 'auto', oneOf(CPU_ISAS), 'CPU kernel set; auto = the widest this CPU runs'),
  cudaGraphs: knob('MS_CUDA_GRAPHS', () => true, bool, 'CUDA: replay captured graphs for pure-decode steps'),
  pdl: knob('MS_PDL', () => true, bool, 'CUDA: programmatic dependent launch between kernels (0 measures what it is worth)'),
  decodeClusterCap: knob('MS_DECODE_CLUSTER', () => 16, int(0), 'CUDA: largest thread-block cluster of decode attention; below 8 = fixed splits'),
  nvshmemPut: knob('MS_NVSHMEM_PUT', () => false, bool, 'CUDA: reach NVSHMEM peers by one-sided puts even where a direct pointer exists'),
} as const;

export type KnobKey = keyof typeof KNOBS;
export type KnobValue<K extends KnobKey> = ReturnType<(typeof KNOBS)[K]['default']>;

/** The knob's value now: parsed from the environment, or its default when unset or empty. */
export function env<K extends KnobKey>(key: K): KnobValue<K> {
  const k = KNOBS[key] as Knob<KnobValue<K>>;
  const raw = process.env[k.name];
  return raw === undefined || raw === '' ? k.default() : k.parse(raw, k.name);
}

/** Whether the knob's variable is set (non-empty), whatever its value. */
export function envIsSet(key: KnobKey): boolean {
  const raw = process.env[KNOBS[key].name];
  return raw !== undefined && raw !== '';
}
