import type { Command } from 'commander';
import { MicroserveError } from '../../common/errors.ts';
import { connect } from '../../actors/runtime/client.ts';

export function register(program: Command): void {
  program
    .command('send <actor-path> <json>')
    .description(`send a message to an actor and print its reply, e.g. microserve send engine/e0 '{"type":"status"}'`)
    .option('--timeout <ms>', 'reply timeout', '10000')
    .option('--no-reply', 'dispatch without waiting for a reply')
    .option('--control <url>', 'control-plane ws URL')
    .action(async (path: string, json: string, o: { timeout: string; reply: boolean; control?: string }) => {
      let msg: unknown;
      try {
        msg = JSON.parse(json);
      } catch (e) {
        throw new MicroserveError('BAD_MESSAGE', `message is not JSON: ${(e as Error).message}`);
      }
      if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) throw new MicroserveError('BAD_MESSAGE', 'message must be a JSON object with a "type"');
      const c = await connect(o.control);
      try {
        if (!o.reply) {
          c.ref(path).dispatch(msg as object);
          await new Promise((r) => setTimeout(r, 100));
          return;
        }
        const r = await c.ref(path).query(msg as object, Number(o.timeout));
        process.stdout.write(JSON.stringify(r, (_k, v) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v)) + '\n');
      } finally {
        await c.close();
      }
    });
}
