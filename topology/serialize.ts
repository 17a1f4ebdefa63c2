/**
 * Topology → YAML text that loads back to the same Topology (paths are already absolute after
 * loading, so the text can be written anywhere). Used to write modified copies, e.g. by
 * `microserve bench` when it switches strategies.
 */
import { stringify } from 'yaml';
import type { Topology } from './types.ts';

export function stringifyTopology(t: Topology): string {
  const { source: _source, ...rest } = t;
  const router = { ...rest.router };
  if (router.apiKey === undefined) delete router.apiKey;
  if (router.maxQueue === undefined) delete router.maxQueue;
  return `# written by microserve${t.source ? ` from ${t.source}` : ''}\n${stringify({ ...rest, router })}`;
}

/** A copy of `t` with another router strategy and params (nothing else changes). */
export function withStrategy(t: Topology, strategy: string, params: Record<string, unknown>): Topology {
  return { ...t, router: { ...t.router, strategy, params: { ...params } } };
}
