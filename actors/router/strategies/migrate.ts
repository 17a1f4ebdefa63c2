/**
 * `migrate`: context migration. The request goes to the least-loaded engine that can generate;
 * when another engine holds a longer cached prefix of the prompt, that engine sends it (no
 * recompute: it is a cache hit there) into the chosen engine's reserved slots first, and the
 * chosen engine prefills only the rest.
 *
 * Params:
 * - `minMatch` [default 16]: a prefix shorter than this is not worth a transfer.
 */
import { MicroserveError } from '../../../common/errors.ts';
import type { RoutedRequest, StrategyContext } from '../strategy-api.ts';
import { disaggregate, generateOn, generators, leastLoaded } from '../strategy-helpers.ts';

export function validateParams(params: Record<string, unknown>): void {
  const v = params.minMatch;
  if (v !== undefined && !(typeof v === 'number' && v >= 0)) {
    throw new MicroserveError('BAD_CONFIG', `migrate: params.minMatch must be a number >= 0 (got ${JSON.stringify(v)})`, { field: 'params.minMatch' });
  }
}

export default async function migrate(ctx: StrategyContext, req: RoutedRequest): Promise<void> {
  const minMatch = (ctx.params.minMatch as number | undefined) ?? 16;
  const dst = leastLoaded(ctx, generators(ctx));
  const holders = ctx.engines();
  if (holders.length <= 1) return generateOn(ctx, req, dst);
  const matched = await Promise.all(holders.map((e) => ctx.matchPrefix(e, req.promptIds)));
  let src = dst;
  let srcMatch = matched[holders.indexOf(dst)] ?? 0;
  const dstMatch = srcMatch;
  holders.forEach((e, i) => {
    if (matched[i] > srcMatch) [src, srcMatch] = [e, matched[i]];
  });
  // at least the last prompt token stays for the destination to decode from
  const end = Math.min(srcMatch, req.promptIds.length - 1);
  if (src === dst || end - dstMatch < Math.max(1, minMatch)) {
    ctx.debug('migrate: no prefix worth moving', { dst, src, srcMatch, dstMatch });
    return generateOn(ctx, req, dst);
  }
  ctx.debug('migrate: moving prefix', { src, dst, end, dstMatch });
  await disaggregate(ctx, req, { end, receivers: [dst], senders: [src] });
}
