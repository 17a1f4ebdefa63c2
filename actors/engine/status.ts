/** An engine's `status` reply, read from the parts the engine core owns (nothing here mutates them). */
import type { LoopMonitor } from '../../common/loop-monitor.ts';
import type { Backend, MemoryPlan } from '../../native/backend.ts';
import type { KvCacheManager } from '../kvcache/manager.ts';
import type { EngineCounters, EngineStatus, Role } from '../messages.ts';
import type { KvReceiver } from './kv-transfer/receiver.ts';
import type { RequestTable } from './request-table.ts';
import type { Scheduler, SchedulerLimits } from './scheduler.ts';

/** What status reads. */
export interface StatusSource {
  name: string;
  model: string;
  role: Role;
  backend: Backend;
  kv: KvCacheManager;
  limits: SchedulerLimits;
  counters: EngineCounters;
  isOverlap: boolean;
  requests: RequestTable;
  scheduler: Scheduler;
  receiver: KvReceiver;
  loopMonitor?: LoopMonitor;
}

/** The backend's memory plan; undefined for a backend that has none (test doubles). */
function planOf(b: Backend): MemoryPlan | undefined {
  try {
    return b.plan ? { ...b.plan } : undefined;
  } catch {
    return undefined;
  }
}

export function engineStatus(s: StatusSource): EngineStatus {
  let numRunning = 0;
  for (const r of s.requests.byKey.values()) if (r.state === 'running' || r.state === 'computed') numRunning++;
  const plan = planOf(s.backend);
  return {
    name: s.name,
    role: s.role,
    device: s.backend.device,
    native: s.backend.nativeStatus,
    pid: process.pid,
    model: s.model,
    numRunning,
    numWaiting: s.scheduler.waiting.length,
    numReserved: s.receiver.reservations.size,
    numPushLeases: s.receiver.leases.size,
    kv: s.kv.stats(),
    pageSize: s.kv.pageSize,
    maxNumSeqs: s.limits.maxNumSeqs,
    maxBatchTokens: s.limits.maxBatchTokens,
    overlap: s.isOverlap,
    counters: structuredClone(s.counters),
    ...(plan ? { plan } : {}),
    ...(s.loopMonitor ? { eventLoop: s.loopMonitor.stats() } : {}),
  };
}
