/**
 * Building blocks for strategies (the built-ins use them; user strategies may too).
 */
import { isMicroserveError, MicroserveError, type ErrorCode } from '../../common/errors.ts';
import type { RoutedRequest, StrategyContext } from './strategy-api.ts';

const ENGINE_FAILURES: ErrorCode[] = ['CONNECTION_LOST', 'ACTOR_STOPPED', 'ACTOR_NOT_FOUND', 'QUERY_TIMEOUT', 'ACTOR_CRASHED'];
const TRANSFER_FAILURES: ErrorCode[] = ['TRANSFER_FAILED', 'TRANSFER_TIMEOUT', 'RESERVATION_EXPIRED', 'UNKNOWN_REQUEST'];

/** The engine is dead, gone or not answering: try elsewhere. */
export function isEngineFailure(e: unknown): boolean {
  return e instanceof MicroserveError && ENGINE_FAILURES.includes(e.code);
}

/** A KV transfer did not complete: the receiver's slots cannot be trusted. */
export function isTransferFailure(e: unknown): boolean {
  return e instanceof MicroserveError && TRANSFER_FAILURES.includes(e.code);
}

/** Engines sorted by load, then plan order (stable). */
export function byLoad(ctx: StrategyContext, engines: string[]): string[] {
  return engines.map((e, i) => ({ e, i, l: ctx.load(e) })).sort((a, b) => a.l - b.l || a.i - b.i).map((x) => x.e);
}

/** The least-loaded engine, or throws NO_ENGINE when the list is empty. */
export function leastLoaded(ctx: StrategyContext, engines: string[]): string {
  if (engines.length === 0) throw new MicroserveError('NO_ENGINE', 'no engine is available for this request');
  return byLoad(ctx, engines)[0];
}

/** Engines that can generate: decode or both, else any live engine. */
export function generators(ctx: StrategyContext): string[] {
  const d = ctx.engines('decode');
  return d.length > 0 ? d : ctx.engines();
}

/** Data parallel: the whole request on one engine. */
export function generateOn(ctx: StrategyContext, req: RoutedRequest, engine: string): Promise<void> {
  return ctx.startGenerate(engine, req.promptIds, 0);
}

export interface DisaggregateOptions {
  /** KV of `[0, end)` is computed by a sender and moved to the receiver; the receiver prefills `[end, len)`. */
  end: number;
  /** Candidate receivers (generate), tried by load until one reserves. */
  receivers: string[];
  /** Candidate senders, tried by load (never the receiver itself). */
  senders: string[];
}

/**
 * Prefill/decode disaggregation, the general case (pd, balanced-pd, migrate):
 *   1. prep_recv(D, ids, end) on the least-loaded receiver that has pages (KV_PAGES_EXHAUSTED or
 *      a dead receiver: the next one);
 *   2. if D lacks `[matched, end)`: remote_send(P, ids, matched, end, kvAddr) from the
 *      least-loaded sender (a dead sender: the next one; a failed transfer: recompute on D);
 *   3. start_generate(D, ids, end): D prefills the rest and decodes.
 * No receiver can reserve: the request runs whole on the least-loaded receiver (it queues there).
 */
export async function disaggregate(ctx: StrategyContext, req: RoutedRequest, o: DisaggregateOptions): Promise<void> {
  const ids = req.promptIds;
  if (o.end <= 0 || o.receivers.length === 0) return generateOn(ctx, req, leastLoaded(ctx, o.receivers.length ? o.receivers : generators(ctx)));
  for (const d of byLoad(ctx, o.receivers)) {
    let kv;
    try {
      kv = await ctx.prepRecv(d, ids, o.end);
    } catch (e) {
      if (isMicroserveError(e, 'KV_PAGES_EXHAUSTED') || isEngineFailure(e)) {
        ctx.debug('prep_recv refused, next receiver', { engine: d, code: (e as MicroserveError).code });
        continue;
      }
      throw e;
    }
    if (kv.matchedLen >= o.end) return ctx.startGenerate(d, ids, o.end);
    let isSent = false;
    for (const p of byLoad(ctx, o.senders.filter((s) => s !== d))) {
      try {
        await ctx.remoteSend(p, ids, kv.matchedLen, o.end, kv.kvAddr);
        isSent = true;
        break;
      } catch (e) {
        await ctx.abort(p);
        if (!isTransferFailure(e) && !isEngineFailure(e)) throw e;
        ctx.debug('remote_send failed', { engine: p, code: (e as MicroserveError).code });
        // a dead or silent sender: try the next one; a failed transfer or a dead receiver: stop
        if (!isEngineFailure(e) || !isAlive(ctx, d)) break;
      }
    }
    // nothing delivered: the receiver recomputes the whole prompt (a dead receiver fails here and
    // the router retries the request elsewhere)
    return ctx.startGenerate(d, ids, isSent ? o.end : 0);
  }
  const alive = o.receivers.filter((r) => isAlive(ctx, r));
  return generateOn(ctx, req, leastLoaded(ctx, alive.length ? alive : generators(ctx)));
}

const isAlive = (ctx: StrategyContext, engine: string) => ctx.engines().includes(engine);

/**
 * Receivers and senders for the disaggregating strategies: decode-only engines receive and
 * prefill-only engines send when there are any, else engines with role `both` do.
 */
export function pdCandidates(ctx: StrategyContext): { receivers: string[]; senders: string[] } {
  const pureDecode = ctx.engines().filter((e) => ctx.role(e) === 'decode');
  const purePrefill = ctx.engines().filter((e) => ctx.role(e) === 'prefill');
  return {
    receivers: pureDecode.length > 0 ? pureDecode : generators(ctx),
    senders: purePrefill.length > 0 ? purePrefill : ctx.engines('prefill'),
  };
}
