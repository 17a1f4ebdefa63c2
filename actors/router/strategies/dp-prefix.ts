/**
 * `dp-prefix`: data parallel, prefix-cache aware. Asks every engine that can generate how much
 * of the prompt it has cached and sends the request to the longest match (ties: least loaded).
 * Falls back to the least-loaded engine when the best match is short or its engine is busy.
 *
 * Params:
 * - `minMatch` [default 16]: matches shorter than this count as none.
 * - `maxLoadGap` [default 4]: a cache hit is skipped when its engine's load exceeds the least
 *   loaded engine's by more than this.
 */
import { MicroserveError } from '../../../common/errors.ts';
import type { RoutedRequest, StrategyContext } from '../strategy-api.ts';
import { byLoad, generateOn, generators, leastLoaded } from '../strategy-helpers.ts';

export function validateParams(params: Record<string, unknown>): void {
  for (const k of ['minMatch', 'maxLoadGap']) {
    const v = params[k];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v >= 0)) {
      throw new MicroserveError('BAD_CONFIG', `dp-prefix: params.${k} must be a number >= 0 (got ${JSON.stringify(v)})`, { field: `params.${k}` });
    }
  }
}

export default async function dpPrefix(ctx: StrategyContext, req: RoutedRequest): Promise<void> {
  const minMatch = (ctx.params.minMatch as number | undefined) ?? 16;
  const maxLoadGap = (ctx.params.maxLoadGap as number | undefined) ?? 4;
  const engines = generators(ctx);
  if (engines.length <= 1) return generateOn(ctx, req, leastLoaded(ctx, engines));
  const matched = await Promise.all(engines.map((e) => ctx.matchPrefix(e, req.promptIds)));
  // loads are read after the await: requests decided meanwhile are counted
  const ordered = byLoad(ctx, engines);
  const minLoad = ctx.load(ordered[0]);
  let best = ordered[0];
  let bestMatch = -1;
  for (const e of ordered) {
    const m = matched[engines.indexOf(e)];
    if (m > bestMatch) [best, bestMatch] = [e, m];
  }
  const isHit = bestMatch >= Math.max(1, minMatch) && ctx.load(best) - minLoad <= maxLoadGap;
  ctx.debug('dp-prefix decision', { best, bestMatch, isHit });
  await generateOn(ctx, req, isHit ? best : ordered[0]);
}
