/**
 * Entry point of a supervised process (one engine = one OS process, which owns its CUDA context).
 * argv[2]: the ProcSpec as JSON; env: MICROSERVE_TOKEN, MICROSERVE_CONTROL, MICROSERVE_NODE_ID,
 * [MICROSERVE_JOIN_WAIT_S=0] how long to keep trying to reach control (an agent's processes wait).
 * Joins control, spawns `proc/<nodeId>` (admin, supervisors/proc-actor.ts) and what the spec asks
 * for. SIGTERM/SIGINT, or the supervisor's IPC channel closing: stop the actors and exit 0.
 */
import { log, setLogProcessName } from '../common/log.ts';
import type { ActorSystem } from '../actors/runtime/system.ts';
import { startWhenReachable } from '../actors/runtime/join.ts';
import { spawnProcActor } from './proc-actor.ts';
import type { ProcSpec } from './proc-spec.ts';
import { env } from '../common/env.ts';
import { LoopMonitor } from '../common/loop-monitor.ts';

const spec = JSON.parse(process.argv[2] ?? 'null') as ProcSpec;
const token = env('token');
const controlUrl = env('controlUrl');
if (!spec || !token || !controlUrl) {
  process.stderr.write('process-main: needs a ProcSpec argument and MICROSERVE_TOKEN / MICROSERVE_CONTROL\n');
  process.exit(2);
}
setLogProcessName(spec.nodeId);
// a loop blocked past the peers' heartbeat deadline makes this process look dead: say so when it happens
const loopMonitor = new LoopMonitor(spec.nodeId);

let system: ActorSystem | null = null;
let closeHook: (() => Promise<void> | void) | undefined;
let shuttingDown = false;
async function shutdown(code: number): Promise<void> {
  if (shuttingDown) return;
  shuttingDown = true;
  try {
    await closeHook?.();
  } catch (e) {
    log.warn('close hook failed', { error: e as Error });
  }
  await system?.close();
  process.exit(code);
}

// The supervisor's IPC channel is this process's lifeline: when the supervisor dies (SIGKILL
// included) the channel closes and no orphan outlives it. Watched before anything else, and
// checked once: the channel may have closed while this module was still loading.
process.on('disconnect', () => {
  log.warn('supervisor gone: exiting');
  void shutdown(0);
});
if (process.send && !process.connected) void shutdown(0);

system = await startWhenReachable({ nodeId: spec.nodeId, token, controlUrl, listen: { host: env('bindHost'), port: 0 } }, env('joinWaitS') * 1000);
spawnProcActor(system, () => void shutdown(0));

if (spec.kind === 'engine') {
  const { spawnEngine } = await import('../actors/engine/actor.ts');
  const h = await spawnEngine(system, { ...spec.engine, model: spec.model, transport: spec.transport, ...(spec.nvshmem ? { nvshmem: spec.nvshmem } : {}), loopMonitor } as any);
  closeHook = () => (h as any)?.close?.();
} else {
  const mod = await import(spec.module);
  const r = await mod.start(system, spec.args);
  closeHook = () => r?.close?.();
}
log.info('process ready', { pid: process.pid });

process.on('SIGTERM', () => void shutdown(0));
process.on('SIGINT', () => void shutdown(0));
process.on('unhandledRejection', (e) => log.error('unhandled rejection', { error: e as Error }));
