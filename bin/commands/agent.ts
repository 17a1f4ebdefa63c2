import type { Command } from 'commander';
import { hostname } from 'node:os';
import { MicroserveError } from '../../common/errors.ts';
import { log, setLogProcessName } from '../../common/log.ts';
import { ActorSystem } from '../../actors/runtime/system.ts';
import { resolveToken } from '../../actors/runtime/token.ts';
import { NodeSupervisor } from '../../supervisors/node-supervisor.ts';
import { spawnProcActor } from '../../supervisors/proc-actor.ts';
import { spawnSupervisorActor } from '../../supervisors/supervisor-actor.ts';

export function register(program: Command): void {
  program
    .command('agent')
    .description('run a node supervisor on this host: joins the cluster and runs the engines the topology places here')
    .requiredOption('--connect <control-url>', 'control-plane ws URL of `microserve up`, e.g. ws://10.0.0.1:7700')
    .option('--host <name>', 'host name as written in the topology', hostname())
    .option('--bind <address>', 'address this host listens on for engine-to-engine traffic', '127.0.0.1')
    .option('--wait <seconds>', 'how long to keep trying to reach the control plane (it may start after the agent)', '60')
    .action(async (o: { connect: string; host: string; bind: string; wait: string }) => {
      const token = resolveToken();
      if (!token) throw new MicroserveError('UNAUTHORIZED', 'set MICROSERVE_TOKEN to the cluster token printed by `up` (or its run file)');
      setLogProcessName(`agent-${o.host}`);
      const waitS = Number(o.wait);
      if (!(waitS >= 0)) throw new MicroserveError('BAD_REQUEST', `--wait: '${o.wait}' is not a number of seconds >= 0`, { field: 'wait' });
      const system = await startWhenReachable(() => ActorSystem.start({ nodeId: `agent-${o.host}`, token, controlUrl: o.connect, listen: { host: o.bind, port: 0 } }), waitS * 1000, o.connect);
      const sup = new NodeSupervisor(system, { host: o.host, controlUrl: o.connect, token, env: { MICROSERVE_BIND: o.bind } });
      spawnSupervisorActor(system, o.host, sup);
      spawnProcActor(system, () => void stop());
      process.stdout.write(`microserve agent: host ${o.host} joined ${o.connect}\n`);
      const stop = async () => {
        log.info('agent stopping');
        await sup.stopAll();
        await system.close();
        process.exit(0);
      };
      process.on('SIGINT', () => void stop());
      process.on('SIGTERM', () => void stop());
      await new Promise(() => {});
    });
}

/** Starts the node, retrying while the control plane cannot be reached yet (backoff 250 ms → 2 s). */
async function startWhenReachable(start: () => Promise<ActorSystem>, waitMs: number, url: string): Promise<ActorSystem> {
  const deadline = Date.now() + waitMs;
  for (let delay = 250; ; delay = Math.min(2 * delay, 2000)) {
    try {
      return await start();
    } catch (e) {
      const unreachable = e instanceof MicroserveError && e.code === 'CONNECTION_LOST';
      if (!unreachable || Date.now() + delay > deadline) throw e;
      log.info('control plane not reachable yet; retrying', { url, inMs: delay });
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
