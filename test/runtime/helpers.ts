import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ActorSystem } from '../../actors/runtime/system.ts';

export const TOKEN = 'test-token-0123456789';
const here = fileURLToPath(new URL('.', import.meta.url));

export async function startControl(): Promise<ActorSystem> {
  return ActorSystem.start({ nodeId: 'control', token: TOKEN, listen: { host: '127.0.0.1', port: 0 } });
}

/** Starts test/runtime/peer-process.ts; resolves when it printed `ready`. */
/** `deadAfterMs`: the peer's own heartbeat deadline for control (default: the runtime's). */
export function startPeer(controlUrl: string, nodeId: string, path: string, deadAfterMs?: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', here + 'peer-process.ts', controlUrl, nodeId, path, ...(deadAfterMs ? [String(deadAfterMs)] : [])], {
    env: { ...process.env, MICROSERVE_TOKEN: TOKEN, MICROSERVE_LOG: 'error' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      if (String(d).includes('ready')) resolve(child);
    });
    child.once('exit', (c) => reject(new Error(`peer exited ${c}`)));
  });
}

export async function waitFor(pred: () => boolean | Promise<boolean>, timeoutMs = 5000, stepMs = 20): Promise<void> {
  const t0 = Date.now();
  while (!(await pred())) {
    if (Date.now() - t0 > timeoutMs) throw new Error('waitFor timed out');
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export function killQuietly(c: ChildProcess | undefined, sig: NodeJS.Signals = 'SIGKILL'): void {
  try {
    if (c && c.exitCode === null) c.kill(sig);
  } catch {
    /* gone */
  }
}
