/**
 * The cluster token and the run file: `up` generates the token and keeps it, with where it
 * listens, in a run file (`~/.microserve/run.json` [default], or `$MICROSERVE_HOME/run.json`) where
 * the CLI finds it; `MICROSERVE_TOKEN` overrides the token.
 *
 * One cluster per home: `up` claims the run file before it starts anything (an exclusive create,
 * so two `up`s racing cannot both win). A run file whose `up` is alive refuses the claim with
 * CLUSTER_RUNNING naming its pid and ports; one whose process is gone (stale) is replaced. `up`
 * removes the run file when it exits, only while it is still its own.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { env } from '../../common/env.ts';
import { MicroserveError } from '../../common/errors.ts';

export interface RunFile {
  token: string;
  controlUrl: string;
  httpUrl: string;
  pid: number;
  topology: string;
  /** Set while `up` is still starting (urls and token not known yet). */
  isStarting?: boolean;
}

export function runDir(): string {
  return env('home');
}

export function runFilePath(): string {
  return join(runDir(), 'run.json');
}

export function newToken(): string {
  return randomBytes(24).toString('hex');
}

export function writeRunFile(rf: RunFile): void {
  mkdirSync(runDir(), { recursive: true, mode: 0o700 });
  writeFileSync(runFilePath(), JSON.stringify(rf, null, 2), { mode: 0o600 });
}

export function readRunFile(): RunFile | null {
  try {
    const rf = JSON.parse(readFileSync(runFilePath(), 'utf8')) as RunFile;
    return rf && typeof rf === 'object' && Number.isInteger(rf.pid) ? rf : null;
  } catch {
    return null;
  }
}

export function removeRunFile(pid: number): void {
  const rf = readRunFile();
  if (rf && rf.pid === pid) rmSync(runFilePath(), { force: true });
}

/**
 * Whether `pid` is a live microserve process (a reused pid of another program is not: on Linux
 * its command line must name microserve).
 */
export function isClusterAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('microserve');
  } catch {
    return true; // no /proc: trust the pid
  }
}

/**
 * Claims this home's run file for `up` (pid `pid`): throws CLUSTER_RUNNING when a live cluster
 * holds it; replaces a stale one (returned, for the log). The claim is a placeholder with
 * `isStarting` until `writeRunFile` fills it in.
 */
export function claimRunFile(pid: number, topology: string): RunFile | null {
  mkdirSync(runDir(), { recursive: true, mode: 0o700 });
  let stale: RunFile | null = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(runFilePath(), 'wx', 0o600);
      writeSync(fd, JSON.stringify({ token: '', controlUrl: '', httpUrl: '', pid, topology, isStarting: true } satisfies RunFile, null, 2));
      closeSync(fd);
      return stale;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const rf = readRunFile();
    if (rf && rf.pid !== pid && isClusterAlive(rf.pid)) {
      const where = rf.isStarting ? 'still starting' : `router ${rf.httpUrl}, control ${rf.controlUrl}`;
      throw new MicroserveError(
        'CLUSTER_RUNNING',
        `a cluster is already running for ${runDir()}: up pid ${rf.pid} (${where}, topology ${rf.topology}). Stop it with \`microserve down\`, or give this one its own MICROSERVE_HOME`,
        { pid: rf.pid },
      );
    }
    stale = rf;
    rmSync(runFilePath(), { force: true });
  }
  throw new MicroserveError('CLUSTER_RUNNING', `could not claim ${runFilePath()}: another up keeps creating it`);
}

/** The token a CLI command should use: env override, else the run file's. */
export function resolveToken(): string | null {
  return env('token') ?? (readRunFile()?.token || null);
}

export function tokensEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
