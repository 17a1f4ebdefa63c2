/** What a node supervisor starts: one OS process per spec, hosting a node of the cluster. */
import type { NvshmemSpec } from '../actors/engine/kv-transfer/nvshmem-join.ts';
import type { EngineSpec } from '../topology/types.ts';

export type ProcSpec =
  | {
      kind: 'engine';
      /** Node id of the process, `engine-<name>`. */
      nodeId: string;
      engine: EngineSpec;
      model: string;
      transport: string;
      /** The engine's NVSHMEM job (`transport: nvshmem`, a GPU engine with peers on its host). */
      nvshmem?: NvshmemSpec;
    }
  | {
      /** Any module exporting `start(system, args)`: tests and extensions. */
      kind: 'module';
      nodeId: string;
      module: string;
      args?: unknown;
      /** Actor paths the module will spawn (for status before it is up). */
      paths: string[];
    };

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
