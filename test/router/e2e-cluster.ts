/**
 * End-to-end clusters for the e2e tests: `microserve up <topology>` run as a user would (real
 * CLI, real engine processes with the `tiny` preset, supervision), driven over HTTP and through
 * the runtime client (router status, engine status, pids to SIGKILL).
 *
 * `missingForE2e()` lists what `up` still needs in the tree; the e2e files skip while it is not
 * empty, saying why.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { EngineStatus, Role } from '../../actors/messages.ts';
import type { RouterStatus } from '../../actors/router/types.ts';
import { ActorSystem } from '../../actors/runtime/system.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TOKEN = 'e2e-token-0123456789abcdef';

/** Files `microserve up` needs; the e2e tests skip while any is missing. */
export function missingForE2e(): string[] {
  return ['actors/runtime/system.ts', 'supervisors/up.ts', 'bin/commands/up.ts', 'actors/engine/actor.ts', 'topology/load.ts'].filter((f) => !existsSync(join(ROOT, f)));
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface E2eEngine {
  name: string;
  role: Role;
}

export interface UpCluster {
  url: string;
  client: ActorSystem;
  /** Rewrites the topology file with another strategy; resolves once the router runs it. */
  setStrategy(strategy: string, params?: Record<string, unknown>): Promise<void>;
  routerStatus(): Promise<RouterStatus>;
  engineStatus(name: string): Promise<EngineStatus>;
  /** SIGKILLs the engine's OS process; returns its pid. */
  killEngine(name: string): Promise<number>;
  close(): Promise<void>;
}

/** Cluster knobs beyond the engines and the strategy. */
export interface UpOptions {
  /** [kvPages=1024] every engine's KV pool. */
  kvPages?: number;
  /** [maxBatchTokens=512] every engine's step budget. */
  maxBatchTokens?: number;
  /** [maxQueue] router.maxQueue. */
  maxQueue?: number;
  /** Extra environment of `up` and so of its engines (e.g. MICROSERVE_TEST_HOOKS=1). */
  env?: Record<string, string>;
  /** [model='tiny'] the topology's model (a preset or a shipped model such as kjv-chat). */
  model?: string;
}

function topologyYaml(engines: E2eEngine[], port: number, strategy: string, params: Record<string, unknown>, o: UpOptions = {}): string {
  const lines = [
    `model: ${o.model ?? 'tiny'}`,
    'transport: host',
    'control:',
    '  port: 0',
    'router:',
    `  port: ${port}`,
    `  strategy: ${strategy}`,
    `  params: ${JSON.stringify(params)}`,
    ...(o.maxQueue !== undefined ? [`  maxQueue: ${o.maxQueue}`] : []),
    'engines:',
  ];
  for (const e of engines) {
    lines.push(`  - name: ${e.name}`, `    role: ${e.role}`, '    device: cpu', `    kvPages: ${o.kvPages ?? 1024}`, '    threads: 1');
    if (o.maxBatchTokens !== undefined) lines.push(`    maxBatchTokens: ${o.maxBatchTokens}`);
  }
  return lines.join('\n') + '\n';
}

export async function startUp(engines: E2eEngine[], strategy = 'dp', params: Record<string, unknown> = {}, o: UpOptions = {}): Promise<UpCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'ms-e2e-'));
  const file = join(dir, 'topology.yaml');
  const port = await freePort();
  writeFileSync(file, topologyYaml(engines, port, strategy, params, o));
  const child: ChildProcess = spawn(process.execPath, [join(ROOT, 'bin/microserve.js'), 'up', file], {
    cwd: ROOT,
    env: { ...process.env, MICROSERVE_HOME: dir, MICROSERVE_TOKEN: TOKEN, MICROSERVE_LOG: process.env.MICROSERVE_LOG ?? 'error', ...o.env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const banner = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`microserve up printed no banner in 120 s: ${out}`)), 120_000);
    child.stdout!.on('data', (d) => {
      out += d;
      if (/control ws:\/\/\S+/.test(out)) {
        clearTimeout(timer);
        resolve(out);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`microserve up exited with ${code}: ${out}`));
    });
  });
  const controlUrl = /control (ws:\/\/\S+)/.exec(banner)![1];
  const url = `http://127.0.0.1:${port}`;
  const client = await ActorSystem.start({ nodeId: `e2e-client-${process.pid}`, token: TOKEN, controlUrl, listen: null });
  const routerStatus = () => client.ref('router').query<RouterStatus>({ type: 'status' }, 5000);
  const t0 = Date.now();
  while ((await fetch(url + '/health').then((r) => r.status, () => 0)) !== 200) {
    if (Date.now() - t0 > 120_000) throw new Error('router not healthy after 120 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    client,
    routerStatus,
    engineStatus: (name) => client.ref(`engine/${name}`).query<EngineStatus>({ type: 'status' }, 5000),
    async setStrategy(next, nextParams = {}) {
      const now = await routerStatus();
      if (now.strategy.endsWith(next) && JSON.stringify(now.params) === JSON.stringify(nextParams)) return; // nothing to change
      const before = now.planVersion;
      writeFileSync(file, topologyYaml(engines, port, next, nextParams, o));
      const t1 = Date.now();
      for (;;) {
        const st = await routerStatus();
        if (st.planVersion > before && st.strategy.endsWith(next)) return;
        if (Date.now() - t1 > 20_000) throw new Error(`router still on ${st.strategy} (plan ${st.planVersion}) 20 s after the topology changed to ${next}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async killEngine(name) {
      const { pid } = await client.ref(`engine/${name}`).query<EngineStatus>({ type: 'status' }, 5000);
      process.kill(pid, 'SIGKILL');
      return pid;
    },
    async close() {
      await client.close();
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const exited = new Promise((r) => child.once('exit', r));
        const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}
