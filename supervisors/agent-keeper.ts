/**
 * `microserve agent`: a small keeper process that runs the host's agent process and brings it back.
 *
 *   keeper (node `keeper-<host>`: `keeper/<host>`, `proc/keeper-<host>`)
 *     └─ agent process (node `agent-<host>`, agent-worker.ts: `supervisor/<host>`)
 *          └─ engine processes of the host (`engine/<name>`, `kv/<name>`)
 *
 * The keeper joins control and supervises the agent process with a NodeSupervisor, under the one
 * restart policy (actors/runtime/restart-policy.ts): an agent process that exits, is SIGKILLed
 * (`microserve kill supervisor/<host> --process`) or stops answering heartbeats (its node drops
 * out of the directory) is restarted after the backoff, and its engines with it; more than 5
 * crashes in 60 s leave it `failed` with the reason in `status`, until `microserve restart
 * supervisor/<host>`. The keeper does nothing else, so there is little that can kill it; if it is
 * killed anyway, the agent process and the engines exit with it (IPC lifelines) and nothing comes
 * back: like `up`, the keeper is what systemd (or similar) should run.
 */
import { fileURLToPath } from 'node:url';
import { log } from '../common/log.ts';
import { KeeperMsgSchema, messageParser } from '../actors/messages.ts';
import { startWhenReachable } from '../actors/runtime/join.ts';
import type { ActorSystem } from '../actors/runtime/system.ts';
import { NodeSupervisor } from './node-supervisor.ts';
import { spawnProcActor } from './proc-actor.ts';
import type { ProcSpec } from './proc-spec.ts';
import type { AgentWorkerArgs } from './agent-worker.ts';

const WORKER = fileURLToPath(new URL('./agent-worker.ts', import.meta.url));

export const agentNodeId = (host: string) => `agent-${host}`;
export const keeperNodeId = (host: string) => `keeper-${host}`;
export const keeperPath = (host: string) => `keeper/${host}`;

export interface AgentOptions {
  /** Host name as written in the topology. */
  host: string;
  /** Control-plane ws URL of `microserve up`, and the cluster token. */
  controlUrl: string;
  token: string;
  /** [bind='127.0.0.1'] address the host's engines listen on for engine-to-engine traffic. */
  bind?: string;
  /** [waitMs=60000] how long the keeper, and the agent process at each start, keep trying to reach control. */
  waitMs?: number;
  /** [controlGraceMs=60000] how long the host's engines outlive a lost control plane (agent-worker.ts). */
  controlGraceMs?: number;
  /** [stopGraceMs=10000] how long `close` waits for the agent process to stop its engines before SIGKILL. */
  stopGraceMs?: number;
  /** Called once the agent closed after `proc/keeper-<host>` was asked to `exit` (the CLI exits the process). */
  onExit?: () => void;
}

export interface Agent {
  system: ActorSystem;
  /** The agent process's supervision (one process, `agent-<host>`). */
  supervisor: NodeSupervisor;
  /** Stops the agent process (and so its engines), then leaves the cluster. */
  close(): Promise<void>;
}

/** The ProcSpec of the agent process of `host`. */
export function agentProcSpec(host: string, args: AgentWorkerArgs): ProcSpec {
  return { kind: 'module', nodeId: agentNodeId(host), module: WORKER, args, paths: [`supervisor/${host}`] };
}

/** Joins control as the keeper of `o.host` and starts the agent process. */
export async function startAgent(o: AgentOptions): Promise<Agent> {
  const bind = o.bind ?? '127.0.0.1';
  const waitMs = o.waitMs ?? 60_000;
  const system = await startWhenReachable({ nodeId: keeperNodeId(o.host), token: o.token, controlUrl: o.controlUrl, listen: null }, waitMs);
  const sup = new NodeSupervisor(system, {
    host: o.host,
    controlUrl: o.controlUrl,
    token: o.token,
    env: { MICROSERVE_BIND: bind, MICROSERVE_JOIN_WAIT_S: String(Math.ceil(waitMs / 1000)) },
  });
  let closing: Promise<void> | null = null;
  const agent: Agent = {
    system,
    supervisor: sup,
    close: () =>
      (closing ??= (async () => {
        log.info('agent stopping');
        await sup.stopAll(o.stopGraceMs ?? 10_000);
        await system.close();
      })()),
  };
  spawnProcActor(system, () => void agent.close().then(() => o.onExit?.()));
  const parse = messageParser(keeperPath(o.host), KeeperMsgSchema);
  system.spawn(keeperPath(o.host), (raw: unknown) => {
    const msg = parse(raw);
    switch (msg.type) {
      case 'kill':
        return { killed: sup.kill(msg.nodeId) };
      case 'restart':
        return { restarted: sup.restart(msg.nodeId) };
      case 'status':
        return { host: o.host, pid: process.pid, procs: sup.status(), actors: system.supervision() };
    }
  });
  sup.start(agentProcSpec(o.host, { host: o.host, bind, controlGraceMs: o.controlGraceMs ?? 60_000 }));
  return agent;
}
