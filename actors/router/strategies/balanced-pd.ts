/**
 * `balanced-pd`: disaggregation where the decode engine also prefills the tail of the prompt, to
 * balance work between prefill and decode engines. With `r = max(1, round(ratio * len))`, the
 * prefill engine sends `[0, len - r)` and the decode engine prefills `[len - r, len)` itself.
 * `ratio` 0 is plain `pd`; a prompt too short to split runs whole on the decode engine.
 *
 * Params:
 * - `ratio` [default 0.1]: share of the prompt the decode engine prefills, in [0, 1).
 */
import { MicroserveError } from '../../../common/errors.ts';
import type { RoutedRequest, StrategyContext } from '../strategy-api.ts';
import { disaggregate, pdCandidates } from '../strategy-helpers.ts';

export const DEFAULT_RATIO = 0.1;

export function validateParams(params: Record<string, unknown>): void {
  const r = params.ratio;
  if (r !== undefined && !(typeof r === 'number' && r >= 0 && r < 1)) {
    throw new MicroserveError('BAD_CONFIG', `balanced-pd: params.ratio must be a number in [0, 1) (got ${JSON.stringify(r)})`, { field: 'params.ratio' });
  }
}

/** Where the prefill engine's part ends: `len - max(1, round(ratio * len))`. */
export function balancedEnd(len: number, ratio: number): number {
  return len - Math.max(1, Math.round(ratio * len));
}

export default async function balancedPd(ctx: StrategyContext, req: RoutedRequest): Promise<void> {
  const ratio = (ctx.params.ratio as number | undefined) ?? DEFAULT_RATIO;
  await disaggregate(ctx, req, { end: balancedEnd(req.promptIds.length, ratio), ...pdCandidates(ctx) });
}
