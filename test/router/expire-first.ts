/**
 * Test strategy: the first attempt reserves the prompt (prep_recv) and starts generation only
 * after the reservation's ttl has run out, as a transfer that ran late would, so start_generate
 * refuses with RESERVATION_EXPIRED; later attempts run data parallel. The runner must retry the
 * request, not fail it.
 */
import type { RoutedRequest, StrategyContext } from '../../actors/router/strategy-api.ts';
import { generateOn, generators, leastLoaded } from '../../actors/router/strategy-helpers.ts';

export default async function expireFirst(ctx: StrategyContext, req: RoutedRequest): Promise<void> {
  const d = leastLoaded(ctx, generators(ctx));
  if (req.attempt > 1) return generateOn(ctx, req, d);
  const kv = await ctx.prepRecv(d, req.promptIds, req.promptIds.length);
  await new Promise((r) => setTimeout(r, 150));  // the router's transferTtlMs is 40 in the test
  await ctx.startGenerate(d, req.promptIds, kv.matchedLen);
}
