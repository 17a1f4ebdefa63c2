/**
 * `dp`: data parallel. Each request runs whole (start_generate, begin 0) on the least-loaded
 * engine that can generate (role decode or both; any engine when there is none).
 * No parameters.
 */
import type { RoutedRequest, StrategyContext } from '../strategy-api.ts';
import { generateOn, generators, leastLoaded } from '../strategy-helpers.ts';

export default async function dp(ctx: StrategyContext, req: RoutedRequest): Promise<void> {
  await generateOn(ctx, req, leastLoaded(ctx, generators(ctx)));
}
