/**
 * Test harness: a control node that hosts the router (as `microserve up` does) and fake engines,
 * in this process or in child processes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Role } from '../../actors/messages.ts';
import { startRouter, type Router, type RouterOptions } from '../../actors/router/index.ts';
import { ActorSystem } from '../../actors/runtime/system.ts';
import { Llama3PresetTokenizer } from '../../actors/text/llama3.ts';
import { spawnFakeEngine, type FakeEngineOptions, type OpRecord } from './fake-engine.ts';

export const TOKEN = 'router-test-token-0123456789';
const here = fileURLToPath(new URL('.', import.meta.url));

export interface EngineDef {
  name: string;
  role: Role;
  options?: FakeEngineOptions;
  /** [inProcess=true] false: its own OS process (killable). */
  inProcess?: boolean;
}

export interface Harness {
  system: ActorSystem;
  router: Router;
  url: string;
  procs: Map<string, ChildProcess>;
  ops(engine: string): Promise<{ ops: OpRecord[]; numReservations: number; numRunning: number; numSending: number }>;
  kill(engine: string): void;
  startEngine(def: EngineDef): Promise<void>;
  close(): Promise<void>;
}

export function startEngineProcess(controlUrl: string, def: EngineDef): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', here + 'fake-engine-process.ts', controlUrl, def.name, def.role, JSON.stringify(def.options ?? {})], {
    env: { ...process.env, MICROSERVE_TOKEN: TOKEN, MICROSERVE_LOG: process.env.MICROSERVE_LOG ?? 'error' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => String(d).includes('ready') && resolve(child));
    child.once('exit', (c) => reject(new Error(`fake engine ${def.name} exited ${c}`)));
  });
}

export async function startHarness(engines: EngineDef[], opts: Partial<RouterOptions> = {}): Promise<Harness> {
  const system = await ActorSystem.start({ nodeId: 'control', token: TOKEN, listen: { host: '127.0.0.1', port: 0 } });
  const procs = new Map<string, ChildProcess>();
  const startEngine = async (def: EngineDef) => {
    if (def.inProcess === false) procs.set(def.name, await startEngineProcess(system.url!, def));
    else spawnFakeEngine(system, def.name, def.role, def.options);
  };
  for (const def of engines) await startEngine(def);
  const router = await startRouter(system, {
    port: 0,
    modelName: 'tiny',
    tokenizer: Llama3PresetTokenizer.get(),
    contextLength: 4096,
    engines: engines.map((e) => ({ name: e.name, role: e.role })),
    strategy: 'dp',
    statusIntervalMs: 100,
    ...opts,
  });
  await router.ready(10_000);
  return {
    system,
    router,
    url: router.url,
    procs,
    ops: (engine) => system.ref(`engine/${engine}`).query({ type: 'test_log' }, 5000),
    kill: (engine) => procs.get(engine)?.kill('SIGKILL'),
    startEngine,
    async close() {
      await router.close();
      for (const p of procs.values()) if (p.exitCode === null) p.kill('SIGKILL');
      await system.close();
    },
  };
}

/** POSTs JSON; returns status and parsed body. */
export async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await r.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, body: parsed };
}

/** Reads an SSE response into its data payloads (JSON-parsed, `[DONE]` kept as a string). */
export async function sse(url: string, body: unknown, onEvent?: (e: any) => void): Promise<any[]> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
  const events: any[] = [];
  let buf = '';
  const decoder = new TextDecoder();
  for await (const part of r.body as any as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(part, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of block.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        const ev = data === '[DONE]' ? data : JSON.parse(data);
        events.push(ev);
        onEvent?.(ev);
      }
    }
  }
  return events;
}
