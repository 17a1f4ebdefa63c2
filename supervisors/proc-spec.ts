/** What a node supervisor starts: one OS process per spec, hosting a node of the cluster (schema in actors/messages.ts). */
import type { ProcSpec } from '../actors/messages.ts';

export type { ProcSpec } from '../actors/messages.ts';

/** Node id of engine `name`'s process. */
export const engineNodeId = (name: string) => `engine-${name}`;

export function specPaths(s: ProcSpec): string[] {
  return s.kind === 'engine' ? [`engine/${s.engine.name}`, `kv/${s.engine.name}`] : s.paths;
}

/** `failed`: the supervisor gave up on a crash loop (`gaveUp` says why) until restarted. */
export type ProcState = 'starting' | 'running' | 'restarting' | 'stopped' | 'failed';

export interface ProcStatus {
  nodeId: string;
  host: string;
  pid: number | null;
  state: ProcState;
  restarts: number;
  paths: string[];
  lastExit?: { code: number | null; signal: string | null; at: string };
  /** Set once the supervisor gave up on a crash loop. */
  gaveUp?: string;
}
