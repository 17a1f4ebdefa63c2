/** A child process for runtime tests: joins control and hosts an echo actor at argv path; [argv deadAfterMs] its heartbeat deadline. */
import { ActorSystem } from '../../actors/runtime/system.ts';
import { spawnEcho } from './echo-actor.ts';

const [controlUrl, nodeId, path, deadAfterMs] = process.argv.slice(2);
const connection = deadAfterMs ? { deadAfterMs: Number(deadAfterMs) } : {};
const sys = await ActorSystem.start({ nodeId, token: process.env.MICROSERVE_TOKEN!, controlUrl, listen: { host: '127.0.0.1', port: 0 }, connection });
spawnEcho(sys, path);
process.stdout.write(`ready ${process.pid}\n`);
process.on('SIGTERM', () => void sys.close().then(() => process.exit(0)));
