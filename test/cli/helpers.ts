/** Drives the real CLI (`node bin/microserve.js ...`) as a user would, in a private MICROSERVE_HOME. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = join(ROOT, 'bin/microserve.js');

/** A TCP port free on 127.0.0.1 right now (for a control plane an agent must find before `up` starts). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

export function tempHome(): string {
  return mkdtempSync(join(tmpdir(), 'microserve-test-'));
}

/** Engines e0 on this host and r1 on agent host h2 (for writeTopology's `engines`). */
export const TWO_HOST_ENGINES = `  - { name: e0, role: both, device: cpu, kvPages: 256, threads: 1 }
  - { name: r1, role: both, device: cpu, kvPages: 256, threads: 1, host: h2 }`;

/**
 * A topology with two tiny CPU engines (override engines/strategy as needed), on free ports unless
 * `controlPort` is given (an agent must know where to connect before `up` starts); `hosts` adds
 * agent hosts, `transport` pins the KV transport, `name` the file's name in `dir`.
 */
export function writeTopology(
  dir: string,
  opts: { strategy?: string; params?: object; engines?: string; model?: string; controlPort?: number; transport?: string; hosts?: string[]; name?: string } = {},
): string {
  const engines =
    opts.engines ??
    `  - { name: e0, role: both, device: cpu, kvPages: 256, threads: 1 }
  - { name: e1, role: both, device: cpu, kvPages: 256, threads: 1 }`;
  const file = join(dir, opts.name ?? 'topology.yaml');
  const lines = [
    `model: ${opts.model ?? 'tiny'}`,
    ...(opts.transport ? [`transport: ${opts.transport}`] : []),
    `control: { host: 127.0.0.1, port: ${opts.controlPort ?? 0} }`,
    `router: { host: 127.0.0.1, port: 0, strategy: ${opts.strategy ?? 'dp'}, params: ${JSON.stringify(opts.params ?? {})} }`,
    ...(opts.hosts ? [`hosts: [${opts.hosts.map((h) => `{ name: ${h} }`).join(', ')}]`] : []),
    'engines:',
    engines,
    '',
  ];
  writeFileSync(file, lines.join('\n'));
  return file;
}

export interface UpProcess {
  child: ChildProcess;
  httpUrl: string;
  controlUrl: string;
  home: string;
  output: () => string;
}

/** Starts `microserve up <file>` and resolves once it printed where it listens. */
export function startUp(file: string, home: string, extraArgs: string[] = [], timeoutMs = 120_000): Promise<UpProcess> {
  const child = spawn(process.execPath, [CLI, 'up', file, ...extraArgs], {
    cwd: ROOT,
    env: { ...process.env, MICROSERVE_HOME: home, MICROSERVE_LOG: process.env.MICROSERVE_LOG ?? 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`up did not become ready:\n${out}`)), timeoutMs);
    const onData = () => {
      const m = /microserve up: router (\S+)\s+control (\S+)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      resolve({ child, httpUrl: m[1], controlUrl: m[2], home, output: () => out });
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`up exited with ${code}:\n${out}`));
    });
  });
}

/** Runs a CLI command to completion. */
export function cli(args: string[], home: string, input?: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, MICROSERVE_HOME: home, MICROSERVE_LOG: 'error' },
    encoding: 'utf8',
    input,
    timeout: 120_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs a CLI command to completion without blocking the event loop (its children keep being reaped; a test holding a client connection must keep answering heartbeats). */
export function cliAsync(args: string[], home: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, MICROSERVE_HOME: home, MICROSERVE_LOG: 'error' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    }),
  );
}

export async function stopUp(up: UpProcess): Promise<number | null> {
  if (up.child.exitCode !== null) return up.child.exitCode;
  up.child.kill('SIGTERM');
  return new Promise((r) => up.child.once('exit', (c) => r(c)));
}

/** Alive and not a zombie (a process whose parent died may wait a while to be reaped). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
  } catch {
    return true; // no /proc
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
