import type { Command } from 'commander';
import { hostname } from 'node:os';
import { MicroserveError } from '../../common/errors.ts';
import { setLogProcessName } from '../../common/log.ts';
import { LoopMonitor } from '../../common/loop-monitor.ts';
import { resolveToken } from '../../actors/runtime/token.ts';
import { agentNodeId, startAgent } from '../../supervisors/agent-keeper.ts';

const seconds = (flag: string, v: string): number => {
  const n = Number(v);
  if (!(n >= 0) || !Number.isFinite(n)) throw new MicroserveError('BAD_REQUEST', `--${flag}: '${v}' is not a number of seconds >= 0`, { field: flag });
  return n;
};

export function register(program: Command): void {
  program
    .command('agent')
    .description(
      'run a node supervisor on this host: joins the cluster and runs the engines the topology places here. ' +
        'This process is a small keeper: it runs the agent process and restarts it (with its engines) when it dies; run the keeper itself under systemd or similar',
    )
    .requiredOption('--connect <control-url>', 'control-plane ws URL of `microserve up`, e.g. ws://10.0.0.1:7700')
    .option('--host <name>', 'host name as written in the topology', hostname())
    .option('--bind <address>', 'address this host listens on for engine-to-engine traffic', '127.0.0.1')
    .option('--wait <seconds>', 'how long to keep trying to reach the control plane (it may start after the agent)', '60')
    .option('--control-grace <seconds>', "how long this host's engines outlive a lost control plane (a restarted `up` on the same address and token adopts them; after it they stop, and start again once control is back)", '60')
    .action(async (o: { connect: string; host: string; bind: string; wait: string; controlGrace: string }) => {
      const token = resolveToken();
      if (!token) throw new MicroserveError('UNAUTHORIZED', 'set MICROSERVE_TOKEN to the cluster token printed by `up` (or its run file)');
      setLogProcessName(`keeper-${o.host}`);
      new LoopMonitor(`keeper-${o.host}`); // logs blocks that would make the keeper look dead to its agent process
      const waitMs = seconds('wait', o.wait) * 1000;
      const controlGraceMs = Math.round(seconds('control-grace', o.controlGrace) * 1000);
      const agent = await startAgent({ host: o.host, controlUrl: o.connect, token, bind: o.bind, waitMs, controlGraceMs, onExit: () => process.exit(0) });
      const pid = agent.supervisor.get(agentNodeId(o.host))?.pid;
      process.stdout.write(`microserve agent: host ${o.host} joined ${o.connect} (keeper pid ${process.pid}, agent process pid ${pid ?? '-'})\n`);
      const stop = () => void agent.close().then(() => process.exit(0));
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      await new Promise(() => {});
    });
}
