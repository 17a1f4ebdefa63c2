/**
 * An engine double for router tests (the real engine lives in actors/engine/): it speaks the
 * engine messages of actors/messages.ts and *checks the contract* the router must keep, so a
 * strategy that sends the wrong ranges fails here:
 * - prep_recv reserves slots for [matched, end) (KV_PAGES_EXHAUSTED past its page budget);
 * - remote_send writes [begin, end) into the receiver with kv_write frames that carry the token
 *   ids of those positions; the receiver refuses writes that are not its reservation's tokens or
 *   not contiguous from its matched length;
 * - start_generate refuses (BAD_MESSAGE) unless KV for [0, begin) is really there: its own
 *   prefix cache or a reservation filled up to begin;
 * - a reservation left past its ttl expires: start_generate and kv_write for its id then refuse
 *   with RESERVATION_EXPIRED, as the real receiver does.
 * Its "model" is deterministic: the next token is a hash of the last tokens and the length, so
 * any engine continues any context the same way (what migration at temperature 0 relies on).
 * Test-only messages: test_log (the op log), test_set (change options), test_stall (go silent).
 */
import { MicroserveError } from '../../common/errors.ts';
import type { EngineStatus, Role, TokensMsg } from '../../actors/messages.ts';
import type { ActorSystemApi } from '../../actors/runtime/types.ts';

export interface FakeEngineOptions {
  /** [tokenMs=2] interval between generated tokens. */
  tokenMs?: number;
  /** [prefillMsPerToken=0.01] simulated prefill cost. */
  prefillMsPerToken?: number;
  /** [pageSize=4] prefix matches are floored to whole pages. */
  pageSize?: number;
  /** [numPages=100000] reservation budget in pages. */
  numPages?: number;
  /** [sendChunks=2] kv_write frames per remote_send, [sendChunkMs=5] pause before each. */
  sendChunks?: number;
  sendChunkMs?: number;
  /** [eosEvery=0] when > 0, emit EOS (128009) where hash % eosEvery == 0. */
  eosEvery?: number;
  /** [failRemoteSend=false] remote_send fails with TRANSFER_FAILED after its first chunk. */
  failRemoteSend?: boolean;
}

export interface OpRecord {
  op: string;
  id?: string;
  begin?: number;
  end?: number;
  len?: number;
  dst?: string;
  matchedLen?: number;
}

export const EOS = 128009;

/** The double's model: next token after `ctx` (ids 1000..20999, ordinary Llama 3 tokens). */
export function nextToken(ctx: readonly number[]): number {
  let h = 2166136261 ^ ctx.length;
  for (let i = Math.max(0, ctx.length - 4); i < ctx.length; i++) h = Math.imul(h ^ ctx[i], 16777619) >>> 0;
  return 1000 + (h % 20000);
}

/** What an undisturbed greedy run generates (no EOS). */
export function expectedTokens(prompt: readonly number[], n: number): number[] {
  const ctx = [...prompt];
  for (let i = 0; i < n; i++) ctx.push(nextToken(ctx));
  return ctx.slice(prompt.length);
}

interface Reservation {
  promptIds: number[];
  end: number;
  matchedLen: number;
  filledTo: number;
  numPages: number;
  timer: NodeJS.Timeout;
}

/** No timer at all for 0 ms (benchmarks use a zero-cost engine). */
const sleep = (ms: number) => (ms > 0 ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve());

export function spawnFakeEngine(system: ActorSystemApi, name: string, role: Role, options: FakeEngineOptions = {}) {
  const o = { tokenMs: 2, prefillMsPerToken: 0.01, pageSize: 4, numPages: 100_000, sendChunks: 2, sendChunkMs: 5, eosEvery: 0, failRemoteSend: false, ...options };
  const cache: number[][] = [];
  const reservations = new Map<string, Reservation>();
  const running = new Map<string, { isStopped: boolean }>();
  const sending = new Set<string>();
  const expired = new Set<string>();
  const ops: OpRecord[] = [];
  let isStalled = false;
  let reservedPages = 0;
  const counters = { requests: 0, tokensPrefilled: 0, tokensGenerated: 0, tokensReceived: 0, tokensSent: 0, bytesSent: 0, bytesReceived: 0, prefixHitTokens: 0, transfers: {} as Record<string, number>, preemptions: 0, tokensRecomputed: 0, stepFailures: 0, stepRetries: 0, requestsFailedByStep: 0, aborts: 0 };

  const match = (ids: readonly number[]) => {
    let best = 0;
    for (const seq of cache) {
      let i = 0;
      while (i < seq.length && i < ids.length && seq[i] === ids[i]) i++;
      best = Math.max(best, i);
    }
    return Math.floor(best / o.pageSize) * o.pageSize;
  };
  const remember = (seq: number[]) => {
    cache.push(seq);
    if (cache.length > 256) cache.shift();
  };
  const release = (id: string) => {
    const r = reservations.get(id);
    if (!r) return false;
    clearTimeout(r.timer);
    reservedPages -= r.numPages;
    reservations.delete(id);
    return true;
  };

  async function generate(id: string, promptIds: number[], begin: number, sampling: any, replyTo: string): Promise<void> {
    const state = { isStopped: false };
    running.set(id, state);
    counters.requests++;
    await sleep((promptIds.length - begin) * o.prefillMsPerToken);
    counters.tokensPrefilled += promptIds.length - begin;
    const ctx = [...promptIds];
    const stops: number[] = sampling.stopTokenIds ?? [];
    for (let n = 0; n < sampling.maxTokens; n++) {
      await sleep(o.tokenMs);
      while (isStalled && !state.isStopped) await sleep(20);
      if (state.isStopped) return;
      let t = nextToken(ctx);
      if (o.eosEvery > 0 && t % o.eosEvery === 0) t = EOS;
      ctx.push(t);
      counters.tokensGenerated++;
      const isLast = stops.includes(t) || n + 1 === sampling.maxTokens;
      const msg: TokensMsg = { type: 'tokens', id, engine: name, tokens: [t] };
      if (isLast) msg.finish = stops.includes(t) ? 'stop' : 'length';
      system.ref(replyTo).dispatch(msg);
      if (isLast) break;
    }
    running.delete(id);
    remember(ctx);
  }

  const handler = async (msg: any): Promise<unknown> => {
    switch (msg.type) {
      case 'status': {
        const st: EngineStatus = {
          name, role, device: 'fake', pid: process.pid, model: 'fake',
          native: { deviceName: 'fake', numThreads: 0, cpuIsa: 'auto', cudaGraphs: false, pdl: false, decodeClusterCap: 0, nvshmemPut: false },
          numRunning: running.size, numWaiting: 0, numReserved: reservations.size, numPushLeases: 0,
          kv: { total: o.numPages, free: o.numPages - reservedPages, cached: 0, inUse: 0, reserved: reservedPages },
          pageSize: o.pageSize, maxNumSeqs: 256, maxBatchTokens: 512,
          counters,
        };
        return st;
      }
      case 'match_prefix':
        return { matchedLen: match(msg.promptIds) };
      case 'set_role':
        role = msg.role;
        ops.push({ op: 'set_role' });
        return { role };
      case 'prep_recv': {
        if (reservations.has(msg.id) || running.has(msg.id)) throw new MicroserveError('DUPLICATE_REQUEST', `request ${msg.id} exists`);
        const matchedLen = Math.min(match(msg.promptIds), msg.end);
        const numPages = Math.ceil(msg.end / o.pageSize) - Math.floor(matchedLen / o.pageSize);
        ops.push({ op: 'prep_recv', id: msg.id, end: msg.end, len: msg.promptIds.length, matchedLen });
        if (reservedPages + numPages > o.numPages) throw new MicroserveError('KV_PAGES_EXHAUSTED', `${name}: ${numPages} pages needed`);
        reservedPages += numPages;
        const timer = setTimeout(() => release(msg.id) && expired.add(msg.id), msg.ttlMs ?? 30_000);
        reservations.set(msg.id, { promptIds: msg.promptIds, end: msg.end, matchedLen, filledTo: matchedLen, numPages, timer });
        const pageIds = Array.from({ length: Math.ceil(msg.end / o.pageSize) }, (_, i) => i);
        return { matchedLen, kvAddr: { engine: name, pageIds, pageSize: o.pageSize, matchedLen, end: msg.end, transports: ['host'] } };
      }
      case 'kv_write': {
        const r = reservations.get(msg.id);
        if (!r && expired.has(msg.id)) throw new MicroserveError('RESERVATION_EXPIRED', `${name}: the reservation for ${msg.id} expired`);
        if (!r) throw new MicroserveError('UNKNOWN_REQUEST', `${name}: no reservation ${msg.id}`);
        const u = new Uint32Array(new Uint8Array(msg.data).buffer);
        const start = u[0];
        const toks = [...u.subarray(1)];
        if (start !== r.filledTo) throw new MicroserveError('BAD_MESSAGE', `${name}: kv_write at ${start}, expected ${r.filledTo}`);
        if (start + toks.length > r.end || toks.some((t, i) => t !== r.promptIds[start + i])) throw new MicroserveError('BAD_MESSAGE', `${name}: kv_write carries the wrong tokens`);
        r.filledTo = start + toks.length;
        counters.tokensReceived += toks.length;
        return { ok: true };
      }
      case 'remote_send': {
        const { id, promptIds, begin, end, kvAddr } = msg;
        ops.push({ op: 'remote_send', id, begin, end, len: promptIds.length, dst: kvAddr.engine });
        if (!(0 <= begin && begin <= end && end <= promptIds.length)) throw new MicroserveError('BAD_MESSAGE', `${name}: bad range [${begin}, ${end})`);
        sending.add(id);
        try {
          const own = match(promptIds);
          await sleep(Math.max(0, end - own) * o.prefillMsPerToken);
          const step = Math.max(1, Math.ceil((end - begin) / o.sendChunks));
          for (let s = begin, k = 0; s < end; s += step, k++) {
            await sleep(o.sendChunkMs);
            if (!sending.has(id)) throw new MicroserveError('ABORTED', `${name}: send ${id} aborted`);
            if (o.failRemoteSend && k === 1) throw new MicroserveError('TRANSFER_FAILED', `${name}: injected transfer failure`);
            const chunk = promptIds.slice(s, Math.min(end, s + step));
            const data = new Uint8Array(Uint32Array.from([s, ...chunk]).buffer);
            try {
              await system.ref(`engine/${kvAddr.engine}`).query({ type: 'kv_write', id, pageIds: [], data }, 5000);
            } catch (e) {
              throw new MicroserveError('TRANSFER_FAILED', `${name}: kv_write to ${kvAddr.engine} failed: ${(e as Error).message}`);
            }
          }
          remember(promptIds.slice(0, end));
          counters.tokensSent += end - begin;
          counters.transfers.host = (counters.transfers.host ?? 0) + 1;
          return { computedTokens: Math.max(0, end - own), sentTokens: end - begin, sentBytes: (end - begin) * 4, transport: 'host' };
        } finally {
          sending.delete(id);
        }
      }
      case 'generate':
      case 'start_generate': {
        const { id, promptIds, sampling, replyTo } = msg;
        const begin = msg.type === 'generate' ? 0 : msg.begin;
        ops.push({ op: msg.type, id, begin, len: promptIds.length });
        if (running.has(id)) throw new MicroserveError('DUPLICATE_REQUEST', `request ${id} is running`);
        if (!(0 <= begin && begin < promptIds.length)) throw new MicroserveError('BAD_MESSAGE', `${name}: begin ${begin} outside [0, ${promptIds.length})`);
        const r = reservations.get(id);
        if (!r && expired.has(id)) throw new MicroserveError('RESERVATION_EXPIRED', `start_generate: the reservation for '${id}' expired`);
        const fromReservation = r && r.promptIds.every((t, i) => i >= r.end || t === promptIds[i]) ? r.filledTo : 0;
        const have = Math.max(match(promptIds), fromReservation);
        if (begin > have) throw new MicroserveError('BAD_MESSAGE', `${name}: KV for [0, ${begin}) is missing (have ${have})`);
        counters.prefixHitTokens += Math.min(have, begin);
        release(id);
        void generate(id, promptIds, begin, sampling, replyTo);
        return { accepted: true };
      }
      case 'abort': {
        ops.push({ op: 'abort', id: msg.id });
        const g = running.get(msg.id);
        if (g) {
          g.isStopped = true;
          running.delete(msg.id);
          counters.aborts++;
        }
        const wasSending = sending.delete(msg.id);
        return { aborted: release(msg.id) || !!g || wasSending };
      }
      case 'test_log':
        return { ops, numReservations: reservations.size, numRunning: running.size, numSending: sending.size };
      case 'test_set':
        Object.assign(o, msg.options);
        return { ok: true };
      case 'test_stall':
        isStalled = !!msg.on;
        return { stalled: isStalled };
      default:
        throw new MicroserveError('BAD_MESSAGE', `fake engine: unknown message type '${msg.type}'`);
    }
  };
  return system.spawn(`engine/${name}`, handler);
}
