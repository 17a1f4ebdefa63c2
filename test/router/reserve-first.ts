/**
 * Test strategy: reserve the whole prompt on the least-loaded generator (prep_recv), hold the
 * reservation a while (as a transfer would), then start_generate from it. A refused prep_recv
 * (KV_PAGES_EXHAUSTED) propagates to the runner, which must wait, not fail the request.
 */
import type { RoutedRequest, StrategyContext } from '../../actors/router/strategy-api.ts';
import { generators, leastLoaded } from '../../actors/router/strategy-helpers.ts';

export default async function reserveFirst(ctx: StrategyContext, req: RoutedRequest): Promise<void> {
  const d = leastLoaded(ctx, generators(ctx));
  const kv = await ctx.prepRecv(d, req.promptIds, req.promptIds.length);
  await new Promise((r) => setTimeout(r, 30));
  await ctx.startGenerate(d, req.promptIds, kv.matchedLen);
}
