/**
 * The built-in strategies, registered once: the loader serves them from here by name and the
 * topology validator checks their params through the same entries. A new built-in is one
 * module in this folder and one line below.
 */
import type { StrategyModule } from '../strategy-api.ts';
import * as balancedPd from './balanced-pd.ts';
import * as dpPrefix from './dp-prefix.ts';
import * as dp from './dp.ts';
import * as migrate from './migrate.ts';
import * as pd from './pd.ts';

export const BUILTIN_STRATEGIES = ['dp', 'dp-prefix', 'pd', 'balanced-pd', 'migrate'] as const;
export type BuiltinStrategy = (typeof BUILTIN_STRATEGIES)[number];

export const BUILTINS: Readonly<Record<BuiltinStrategy, StrategyModule>> = {
  dp,
  'dp-prefix': dpPrefix,
  pd,
  'balanced-pd': balancedPd,
  migrate,
};

export function isBuiltinStrategy(name: string): name is BuiltinStrategy {
  return Object.hasOwn(BUILTINS, name);
}
