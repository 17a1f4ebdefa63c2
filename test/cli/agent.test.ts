/**
 * A second host: `microserve agent --connect <control-url> --host h2` joins the cluster and runs
 * the engines the topology places on h2 (here both "hosts" are this machine, as two supervisors).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { connect as tcpConnect } from 'node:net';
import { connect } from '../../actors/runtime/client.ts';
import { CLI, ROOT, TWO_HOST_ENGINES, freePort, isAlive, sleep, startUp, stopUp, tempHome, writeTopology } from './helpers.ts';

/** Resolves once something accepts TCP connections on `port` (up's control listener), polling; rejects after `timeoutMs`. */

test('an agent runs the engines placed on its host; a request is served by it', async () => {
  const home = tempHome();
  const token = 'agent-test-token-0123456789';
  process.env.MICROSERVE_TOKEN = token;
  process.env.MICROSERVE_HOME = home;
  const port = await freePort();
  const file = writeTopology(home, { name: 'two-hosts.yaml', controlPort: port, hosts: ['h2'], engines: TWO_HOST_ENGINES });
  const upP = startUp(file, home, ['--no-watch']);
  // started right away: the agent keeps trying until `up`'s control plane listens (--wait)
  const agent = spawn(process.execPath, [CLI, 'agent', '--connect', `ws://127.0.0.1:${port}`, '--host', 'h2'], {
    cwd: ROOT,
    env: { ...process.env, MICROSERVE_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const up = await upP;
  const client = await connect(up.controlUrl);
  try {
    const st: any = await client.ref('control').query({ type: 'status' }, 10_000);
    const r1 = st.actors.find((a: any) => a.path === 'engine/r1');
    assert.is(r1.host, 'h2');
    assert.is(r1.state, 'running');
    assert.ok(st.actors.some((a: any) => a.path === 'supervisor/h2'));
    const reply: any = await client.ref('engine/r1').query({ type: 'status' }, 5000);
    assert.is(reply.name, 'r1');
    // the router uses it: ask for enough requests that dp puts some on r1
    await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        fetch(`${up.httpUrl}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'tiny', prompt: [100 + i, 200, 300, 400], max_tokens: 4, temperature: 0 }),
        }).then((r) => assert.is(r.status, 200)),
      ),
    );
    const after: any = await client.ref('engine/r1').query({ type: 'status' }, 5000);
    assert.ok(after.counters.requests > 0, 'r1 served no request');
    const pid = r1.pid;
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
    await sleep(300);
    assert.not.ok(isAlive(pid), 'the agent left its engine running');
  } finally {
    await client.close();
    if (agent.exitCode === null) agent.kill('SIGKILL');
    await stopUp(up);
  }
});

test.run();
