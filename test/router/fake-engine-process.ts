/**
 * A fake engine in its own OS process (so tests can SIGKILL it): joins the cluster at
 * argv[2] as node `engine-<name>`, spawns `engine/<name>` (test/router/fake-engine.ts) and
 * prints `ready`. argv: controlUrl name role optionsJson; env MICROSERVE_TOKEN.
 */
import { ActorSystem } from '../../actors/runtime/system.ts';
import { spawnFakeEngine } from './fake-engine.ts';

const [controlUrl, name, role, optionsJson] = process.argv.slice(2);
const system = await ActorSystem.start({
  nodeId: `engine-${name}`,
  token: process.env.MICROSERVE_TOKEN!,
  controlUrl,
  listen: { host: '127.0.0.1', port: 0 },
});
spawnFakeEngine(system, name, role as any, JSON.parse(optionsJson ?? '{}'));
process.stdout.write('ready\n');
process.on('SIGTERM', () => void system.close().then(() => process.exit(0)));
