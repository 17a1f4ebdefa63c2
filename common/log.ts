/**
 * The one logger. Library code logs through this, never console.log. Lines go to stderr as
 * `time level [process] msg {fields}`; MICROSERVE_LOG=debug|info|warn|error|silent sets the level
 * [default: info] (common/env.ts; a malformed value logs at info).
 */
import { env, type LogLevel } from './env.ts';

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };
type Level = LogLevel;

let threshold: number = initialThreshold();

function initialThreshold(): number {
  try {
    return LEVELS[env('logLevel')];
  } catch {
    return LEVELS.info;
  }
}
let processName = `pid${process.pid}`;

export function setLogProcessName(name: string): void {
  processName = name;
}

export function setLogLevel(level: Level): void {
  threshold = LEVELS[level];
}

function emit(level: Level, msg: string, fields?: Record<string, unknown>): void {
  if (LEVELS[level] < threshold) return;
  let line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} [${processName}] ${msg}`;
  if (fields && Object.keys(fields).length > 0) {
    try {
      line += ' ' + JSON.stringify(fields, (_k, v) => (v instanceof Error ? { message: v.message, code: (v as any).code } : v));
    } catch {
      line += ' {unserialisable fields}';
    }
  }
  process.stderr.write(line + '\n');
}

export const log = {
  debug: (msg: string, fields?: Record<string, unknown>) => emit('debug', msg, fields),
  info: (msg: string, fields?: Record<string, unknown>) => emit('info', msg, fields),
  warn: (msg: string, fields?: Record<string, unknown>) => emit('warn', msg, fields),
  error: (msg: string, fields?: Record<string, unknown>) => emit('error', msg, fields),
};
