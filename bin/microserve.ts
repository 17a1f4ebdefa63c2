/**
 * `microserve` CLI. Each subcommand lives in bin/commands/<name>.ts and exports
 * `register(program)`. Errors print as `error [CODE]: message` with exit code 1, no stack trace.
 */
import { Command } from 'commander';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MicroserveError } from '../common/errors.ts';
import { env } from '../common/env.ts';

const COMMANDS = ['up', 'down', 'status', 'kill', 'restart', 'send', 'agent', 'generate', 'apply', 'bench'];

export function fail(e: unknown): never {
  if (e instanceof MicroserveError) process.stderr.write(`error [${e.code}]: ${e.message}\n`);
  else process.stderr.write(`error: ${(e as Error)?.message ?? String(e)}\n`);
  if (env('debug')) process.stderr.write(`${(e as Error)?.stack}\n`);
  process.exit(1);
}

// `microserve status | head` closes our stdout early: that is not an error
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

const program = new Command();
program.name('microserve').description('LLM microserving: actors, engines, programmable router').showHelpAfterError();
for (const name of COMMANDS) {
  const file = fileURLToPath(new URL(`./commands/${name}.ts`, import.meta.url));
  if (!existsSync(file)) continue;
  const mod = await import(file);
  mod.register(program);
}
try {
  await program.parseAsync(process.argv);
} catch (e) {
  fail(e);
}
