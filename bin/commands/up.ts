import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describePlan } from '../../actors/engine/plan.ts';
import { log, setLogProcessName } from '../../common/log.ts';
import { LoopMonitor } from '../../common/loop-monitor.ts';
import { claimRunFile, newToken, removeRunFile, runFilePath, writeRunFile } from '../../actors/runtime/token.ts';
import type { Cluster } from '../../supervisors/cluster.ts';
import { env } from '../../common/env.ts';

/** What the random-weights note suggests instead. */
const TRAINED_HINT = 'kjv-chat, or a Hugging Face checkpoint folder';
const DEFAULT_TOPOLOGY = fileURLToPath(new URL('../../topology/default.yaml', import.meta.url));

const port = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('--port must be an integer in [0, 65535] (0 picks a free port)');
  return n;
};

export function register(program: Command): void {
  program
    .command('up [topology]')
    .description('start what a topology file describes (default topology/default.yaml: a router and two CPU engines serving kjv-chat, the small trained model shipped with microserve); stop it with ctrl-C or `microserve down`')
    .option('--no-watch', 'do not hot-reload the topology file when it changes')
    .option('--port <port>', "router HTTP port (overrides the topology's router.port; 0 picks a free one)", port)
    .option('--host <addr>', "router HTTP bind address (overrides the topology's router.host)")
    .action(async (file: string | undefined, o: { watch: boolean; port?: number; host?: string }) => {
      setLogProcessName('up');
      // the router and control live on this loop: a long block looks like a dead `up` to every peer
      const loopMonitor = new LoopMonitor('up');
      const path = resolve(file ?? DEFAULT_TOPOLOGY);
      // one cluster per home: refuses (CLUSTER_RUNNING) while another up of this home is alive
      const stale = claimRunFile(process.pid, path);
      if (stale) log.warn('replaced a stale run file (its up is gone)', { file: runFilePath(), pid: stale.pid });
      // after an up that died (SIGKILL), the same token: its agents rejoin, and their engines are adopted
      const token = env('token') ?? (stale?.token || newToken());
      let cluster: Cluster | null = null;
      let stopping = false;
      const stop = async (code: number) => {
        if (stopping) return;
        stopping = true;
        log.info('stopping everything up started');
        try {
          await cluster?.close();
        } finally {
          removeRunFile(process.pid);
          process.exit(code);
        }
      };
      process.on('SIGINT', () => void stop(0));
      process.on('SIGTERM', () => void stop(0));
      try {
        // imported here so other subcommands start without loading the router and engines
        const { startControlPlane } = await import('../../supervisors/up.ts');
        const router = { ...(o.host !== undefined ? { host: o.host } : {}), ...(o.port !== undefined ? { port: o.port } : {}) };
        const up = await startControlPlane(path, token, { watch: o.watch, router, loopMonitor });
        cluster = up.cluster;
        writeRunFile({ token, controlUrl: cluster.system.url!, httpUrl: up.httpUrl, pid: process.pid, topology: path });
        process.stdout.write(
          `microserve up: router ${up.httpUrl}  control ${cluster.system.url}  engines ${cluster.topology.engines.map((e) => `${e.name}(${e.role},${e.device})`).join(' ')}  strategy ${cluster.topology.router.strategy}\n`,
        );
        process.stdout.write(`  model ${up.model.name}: ${up.model.weights}\n`);
        if (up.model.isRandom) process.stdout.write(`  note: random weights write gibberish and rarely stop; for English serve a trained model (model: ${TRAINED_HINT})\n`);
      } catch (e) {
        removeRunFile(process.pid);
        throw e;
      }
      // the engines are ready (the router waited for them): their memory plans
      const st = await cluster.status().catch(() => null);
      for (const a of st?.actors ?? []) if (a.plan) process.stdout.write(`  ${a.path} memory plan, ${describePlan(a.plan)}\n`);
      if (stopping) return;
      await new Promise(() => {});
    });
}
