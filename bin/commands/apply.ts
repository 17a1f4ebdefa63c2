import type { Command } from 'commander';
import { resolve } from 'node:path';
import { connect } from '../../actors/runtime/client.ts';
import { loadTopology } from '../../topology/load.ts';

/** What `control` answers to `apply` (topology/apply.ts ApplyReport, as the wire carries it). */
interface AppliedReport {
  version?: number;
  changes?: string[];
  reconfigureMs?: number;
  drainMs?: number;
  spawnMs?: number;
  restartMs?: number;
}

export function register(program: Command): void {
  program
    .command('apply <topology>')
    .description('push a topology file to the running cluster: role and strategy changes in place, new engines spawned, removed ones drained and stopped')
    .option('--control <url>', 'control-plane ws URL (default: from the run file written by `up`)')
    .option('--timeout <ms>', 'how long to wait for the apply to finish (spawning engines included)', '120000')
    .option('--json', 'print the apply report as JSON')
    .action(async (file: string, o: { control?: string; timeout: string; json?: boolean }) => {
      // validated here first: a bad file is refused with its field and line before anything is sent
      const topology = loadTopology(resolve(file));
      const c = await connect(o.control);
      try {
        const r = await c.ref('control').query<AppliedReport>({ type: 'apply', topology }, Number(o.timeout));
        if (o.json) return void process.stdout.write(JSON.stringify(r) + '\n');
        const changes = r?.changes ?? [];
        if (changes.length === 0) return void process.stdout.write(`nothing changed (topology v${r?.version ?? '?'})\n`);
        process.stdout.write(`topology v${r.version}: ${changes.length} change${changes.length > 1 ? 's' : ''}\n`);
        for (const line of changes) process.stdout.write(`  ${line}\n`);
        const parts = [r.spawnMs ? `spawning ${r.spawnMs.toFixed(0)} ms` : '', r.restartMs ? `restarts ${r.restartMs.toFixed(0)} ms` : ''].filter(Boolean);
        process.stdout.write(`reconfigured in ${r.reconfigureMs?.toFixed(2) ?? '?'} ms (receipt → router ack${parts.length ? `, of which ${parts.join(', ')}` : ''}); drain ${r.drainMs?.toFixed(2) ?? '?'} ms\n`);
      } finally {
        await c.close();
      }
    });
}
