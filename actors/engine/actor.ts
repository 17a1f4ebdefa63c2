/**
 * `engine/<name>` and `kv/<name>`: one engine as actors. The handler only validates and hands
 * work to the EngineCore, so every message returns promptly (a long prefill or a transfer is a
 * returned promise, and the runtime does not hold the mailbox on it): `status` is answered
 * between forward steps.
 *
 * Replies: generate / start_generate → `{ accepted: true }` once admitted (send them as queries:
 * a refusal is the typed error of the reply); prep_recv → PrepRecvResult; remote_send →
 * RemoteSendResult; kv_write and kv_push_begin → `{ ok: true }`; kv_push_end → `{ ok: true, bytes }`; abort → `{ aborted }`; match_prefix →
 * `{ matchedLen }`; set_role → `{ role }`; status → EngineStatus. Tokens go to `replyTo` as
 * `tokens_batch` messages: one per step and destination, every request's new tokens in it.
 */
import { env } from '../../common/env.ts';
import type { LoopMonitor } from '../../common/loop-monitor.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import type { TransportName } from '../../common/transport.ts';
import { MicroserveError } from '../../common/errors.ts';
import { spawnKvActor } from '../kvcache/actor.ts';
import { hasTokenizer } from '../text/loader.ts';
import type { TokenizerSource } from '../text/tokenizer.ts';
import { log } from '../../common/log.ts';
import type { Backend } from '../../native/backend.ts';
import { EngineMsgSchema, defaultMaxBatchTokens, messageParser, type KvNvshmemAddr, type Role, type TokensBatchMsg } from '../messages.ts';
import type { ActorSystemApi, Handler } from '../runtime/types.ts';
import { EngineCore } from './engine-core.ts';
import { exportIpcAddr } from './kv-transfer/cuda-ipc.ts';
import { nvshmemRendezvous, type NvshmemSpec } from './kv-transfer/nvshmem-join.ts';
import { acceptedTransports, transportPicker } from './kv-transfer/pick.ts';
import { checkId } from './validate.ts';
import { DEFAULT_MAX_NUM_SEQS } from './types.ts';
import { describePlan } from './plan.ts';

export interface EngineOptions {
  /** Engine name: actors `engine/<name>` and `kv/<name>`. */
  name: string;
  /** [role='both'] */
  role?: Role;
  /** Preset name (`tiny`, `llama-3.1-8b`) or a Hugging Face checkpoint folder. */
  model: string;
  /** [device='cpu'] 'cpu' or 'cuda:N'. */
  device?: string;
  /** [kvPages=512] KV pool size in pages, or 'auto' (GPU: what gpuMemoryUtilization leaves; CPU: 512). */
  kvPages?: number | 'auto';
  /** [pageSize=16] tokens per page. */
  pageSize?: number;
  /** [maxBatchTokens=defaultMaxBatchTokens(device): 1024 on a GPU, 512 on CPU] tokens per step (prefill chunk budget); the memory plan holds such a step. */
  maxBatchTokens?: number;
  /** [maxNumSeqs=256] sequences per step: the scheduler's cap and the memory plan's. */
  maxNumSeqs?: number;
  /** [gpuMemoryUtilization=0.9] share of the GPU's total memory the engine may use (kvPages 'auto'). */
  gpuMemoryUtilization?: number;
  /** [threads=0] CPU threads, 0 = all cores. */
  threads?: number;
  /** [grammarWorkers=min(4, floor(cores / 2)), at least 1] grammar worker threads (EngineCoreOptions.grammarWorkers). */
  grammarWorkers?: number;
  /** [transport='auto'] KV transport to other engines; only 'host' exists on CPU engines. */
  transport?: TransportName;
  /** [overlap=MICROSERVE_OVERLAP, default true] see EngineCoreOptions.overlap. */
  overlap?: boolean;
  /** [seed] seed of a preset's random weights. */
  seed?: number;
  /**
   * [nvshmem] this engine's place in an NVSHMEM job (`up` sets it for `transport: nvshmem`): the
   * KV pool joins the job's symmetric heap and the `nvshmem` transport reaches the other members.
   * Needs the control node's `nvshmem` rendezvous actor.
   */
  nvshmem?: NvshmemSpec;
  /** [loopMonitor] the process's event-loop monitor (process-main.ts), shown by `status`. */
  loopMonitor?: LoopMonitor;
}

export interface EngineHandle {
  readonly name: string;
  readonly core: EngineCore;
  readonly loaded: LoadedModel;
  /** Aborts all work, stops both actors, frees the backend. */
  close(): Promise<void>;
}

export async function spawnEngine(system: ActorSystemApi, opts: EngineOptions): Promise<EngineHandle> {
  const name = opts.name;
  if (typeof name !== 'string' || !/^[a-zA-Z0-9_.-]+$/.test(name)) throw new MicroserveError('BAD_CONFIG', `engine name must match [a-zA-Z0-9_.-]+ (got ${JSON.stringify(name)})`, { field: 'name' });
  const transport = opts.transport ?? 'auto';
  const device = opts.device ?? 'cpu';
  const wantsNvshmem = !!opts.nvshmem && opts.nvshmem.nranks > 1 && device.startsWith('cuda') && (transport === 'nvshmem' || transport === 'auto');
  const join = wantsNvshmem ? await nvshmemRendezvous(system, name, opts.nvshmem!) : null;
  const maxBatchTokens = opts.maxBatchTokens ?? defaultMaxBatchTokens(device);
  const maxNumSeqs = opts.maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS;
  const loaded = await openModel(opts.model, {
    device,
    numPages: opts.kvPages ?? 512,
    pageSize: opts.pageSize ?? 16,
    maxBatchTokens,
    maxNumSeqs,
    gpuMemoryUtilization: opts.gpuMemoryUtilization ?? 0.9,
    numThreads: opts.threads ?? 0,
    seed: opts.seed,
    ...(join ? { nvshmem: join } : {}),
  });
  // nvshmem inside a job; cuda-ipc where the backend can export its pool (not a symmetric-heap
  // pool); everything else (and CPU engines) uses host.
  const nv: KvNvshmemAddr | undefined = loaded.nvshmem
    ? { job: opts.nvshmem!.job, pe: loaded.nvshmem.pe, numPages: loaded.backend.numPages, pageBytes: loaded.backend.pageBytes }
    : undefined;
  if (loaded.nvshmem) log.info('NVSHMEM job joined', { engine: name, job: nv!.job, pe: nv!.pe, npes: loaded.nvshmem.npes, initStatus: loaded.nvshmem.initStatus, initMs: Math.round(loaded.nvshmem.initMs) });
  const ipc = !nv && (transport === 'auto' || transport === 'cuda-ipc' || transport === 'nvshmem') ? (await exportIpcAddr(loaded.backend)) ?? undefined : undefined;
  if ((transport === 'nvshmem' && !nv) || (transport === 'cuda-ipc' && !ipc)) {
    log.warn('KV transport not available on this engine; using the next one', { engine: name, transport, using: ipc ? 'cuda-ipc' : 'host', device: loaded.backend.device });
  }
  const core = new EngineCore({
    name,
    backend: loaded.backend,
    model: loaded.name,
    role: opts.role ?? 'both',
    maxBatchTokens,
    maxNumSeqs,
    grammarWorkers: opts.grammarWorkers,
    overlap: opts.overlap ?? env('overlapSteps'),
    // TEST ONLY (see EngineCoreOptions.testHooks): the one place this switch is read
    testHooks: env('testHooks'),
    sink: (replyTo, items) => {
      if (replyTo) system.ref(replyTo).dispatch({ type: 'tokens_batch', engine: name, items } satisfies TokensBatchMsg);
    },
    pickTransport: transportPicker(system, loaded.backend, { ipc, nvshmem: nv }),
    acceptTransports: acceptedTransports({ ipc, nvshmem: nv }),
    ...(ipc ? { ipc } : {}),
    ...(nv ? { nvshmem: nv } : {}),
    ...tokenizerOption(loaded),
    ...(opts.loopMonitor ? { loopMonitor: opts.loopMonitor } : {}),
  });
  system.spawn(`engine/${name}`, engineHandler(core), { onCrash: () => 'resume' });
  spawnKvActor(system, name, core.kv);
  log.info('engine ready', { engine: name, model: loaded.name, device: loaded.backend.device, kvPages: core.kv.numPages, pageSize: core.kv.pageSize, plan: describePlan(loaded.backend.plan) });
  let isClosed = false;
  return {
    name,
    core,
    loaded,
    async close() {
      if (isClosed) return;
      isClosed = true;
      core.close();
      system.stop(`engine/${name}`);
      system.stop(`kv/${name}`);
      loaded.backend.close(); // queued native calls still finish; later ones fail
    },
  };
}

/** The `tokenizer` option of a loaded model (structured outputs), when it has a tokenizer. */
export function tokenizerOption(loaded: Pick<LoadedModel, 'folder' | 'isPreset'>): { tokenizer?: TokenizerSource } {
  const source = { folder: loaded.folder, isPreset: loaded.isPreset };
  return hasTokenizer(source) ? { tokenizer: source } : {};
}

/** The message handler of `engine/<name>`: every message passes its schema first (BAD_MESSAGE). */
export function engineHandler(core: EngineCore): Handler {
  const parse = messageParser(`engine/${core.name}`, EngineMsgSchema);
  return (raw: unknown) => {
    const msg = parse(raw);
    switch (msg.type) {
      case 'generate':
        core.generate(msg);
        return { accepted: true };
      case 'start_generate':
        core.startGenerate(msg);
        return { accepted: true };
      case 'prep_recv':
        return core.prepRecv(msg);
      case 'remote_send':
        return core.remoteSend(msg);
      case 'kv_write':
        return core.kvWrite(msg);
      case 'kv_push_begin':
        return core.kvPushBegin(msg);
      case 'kv_push_end':
        return core.kvPushEnd(msg);
      case 'abort':
        return core.abort(checkId(msg.id, 'abort'));
      case 'match_prefix':
        return core.matchPrefix(msg.promptIds);
      case 'set_role':
        return core.setRole(msg.role);
      case 'flush_cache':
        return core.flushCache();
      case 'status':
        return core.status();
      case 'test_fail_steps':
        return core.failNextSteps(msg.count);
    }
  };
}
