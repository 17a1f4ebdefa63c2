/**
 * `pd`: prefill/decode disaggregation. A prefill engine computes the KV of the prompt but its last
 * token, `[0, len-1)`, and writes it into a decode engine's reserved slots; the decode engine then
 * starts at `len-1` (the last prompt token is its first decode input).
 *
 * Receivers are engines with role `decode` (else `both`), senders those with role `prefill`
 * (else `both`); the least-loaded of each, with fallbacks (see `disaggregate`). No parameters.
 */
import type { RoutedRequest, StrategyContext } from '../strategy-api.ts';
import { disaggregate, pdCandidates } from '../strategy-helpers.ts';

export default async function pd(ctx: StrategyContext, req: RoutedRequest): Promise<void> {
  const len = req.promptIds.length;
  await disaggregate(ctx, req, { end: len - 1, ...pdCandidates(ctx) });
}
