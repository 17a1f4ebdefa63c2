import type { Command } from 'commander';
import { connect } from '../../actors/runtime/client.ts';

export function register(program: Command): void {
  program
    .command('restart <actor-path>')
    .description('bring an actor back now (after its supervisor gave up on a crash loop: state `failed`), with a fresh crash window')
    .option('--control <url>', 'control-plane ws URL')
    .action(async (path: string, o: { control?: string }) => {
      const c = await connect(o.control);
      try {
        const r = await c.ref('control').query({ type: 'restart', path }, 10_000);
        process.stdout.write(JSON.stringify(r) + '\n');
      } finally {
        await c.close();
      }
    });
}
