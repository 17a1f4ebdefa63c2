/** A child process for runtime tests: joins control and hosts an echo actor at argv path. */
import { ActorSystem } from '../../actors/runtime/system.ts';
import { spawnEcho } from './echo-actor.ts';

const [controlUrl, nodeId, path] = process.argv.slice(2);
const sys = await ActorSystem.start({ nodeId, token: process.env.MICROSERVE_TOKEN!, controlUrl, listen: { host: '127.0.0.1', port: 0 } });
spawnEcho(sys, path);
process.stdout.write(`ready ${process.pid}\n`);
process.on('SIGTERM', () => void sys.close().then(() => process.exit(0)));
