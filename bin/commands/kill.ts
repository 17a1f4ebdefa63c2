import type { Command } from 'commander';
import { connect } from '../../actors/runtime/client.ts';

export function register(program: Command): void {
  program
    .command('kill <actor-path>')
    .description('stop an actor, or with --process SIGKILL the OS process hosting it (resilience testing)')
    .option('--process', 'SIGKILL the hosting process; its supervisor restarts it')
    .option('--control <url>', 'control-plane ws URL')
    .action(async (path: string, o: { process?: boolean; control?: string }) => {
      const c = await connect(o.control);
      try {
        const r = await c.ref('control').query({ type: 'kill', path, process: !!o.process }, 10_000);
        process.stdout.write(JSON.stringify(r) + '\n');
      } finally {
        await c.close();
      }
    });
}
