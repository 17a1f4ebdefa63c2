/** Node supervisor with real processes: restart after SIGKILL, hung process, crash-loop give-up, adopt and forget. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fileURLToPath } from 'node:url';
import { NodeSupervisor } from '../../supervisors/node-supervisor.ts';
import { startControl, TOKEN, waitFor } from './helpers.ts';

const ECHO = fileURLToPath(new URL('./echo-module.ts', import.meta.url));

test('a SIGKILLed process is restarted and answers again', async () => {
  const control = await startControl();
  const sup = new NodeSupervisor(control, { host: 'local', controlUrl: control.url!, token: TOKEN, backoffMs: 50 });
  try {
    sup.start({ kind: 'module', nodeId: 'echo-1', module: ECHO, args: { path: 'test/e1' }, paths: ['test/e1'] });
    await waitFor(() => sup.get('echo-1')?.state === 'running', 15000);
    const pid1 = ((await control.ref('test/e1').query({ type: 'pid' }, 2000)) as any).pid;
    assert.ok(sup.kill('echo-1'));
    await waitFor(() => sup.get('echo-1')?.restarts === 1 && sup.get('echo-1')?.state === 'running', 15000);
    const pid2 = ((await control.ref('test/e1').query({ type: 'pid' }, 2000)) as any).pid;
    assert.is.not(pid1, pid2);
    assert.is(sup.get('echo-1')!.pid, pid2);
  } finally {
    await sup.stopAll();
    await control.close();
  }
});

test('a SIGSTOPped (hung) process is killed and restarted', async () => {
  const control = await startControl();
  const sup = new NodeSupervisor(control, { host: 'local', controlUrl: control.url!, token: TOKEN, backoffMs: 50 });
  try {
    sup.start({ kind: 'module', nodeId: 'echo-2', module: ECHO, args: { path: 'test/e2' }, paths: ['test/e2'] });
    await waitFor(() => sup.get('echo-2')?.state === 'running', 15000);
    const pid1 = sup.get('echo-2')!.pid!;
    process.kill(pid1, 'SIGSTOP');
    await waitFor(() => sup.get('echo-2')?.restarts === 1 && sup.get('echo-2')?.state === 'running', 15000);
    const r = (await control.ref('test/e2').query({ type: 'pid' }, 2000)) as any;
    assert.is.not(r.pid, pid1);
    assert.is(sup.get('echo-2')!.lastExit!.signal, 'SIGKILL');
  } finally {
    await sup.stopAll();
    await control.close();
  }
});

test('a crash loop ends in give-up, reported as failed', async () => {
  const control = await startControl();
  const sup = new NodeSupervisor(control, { host: 'local', controlUrl: control.url!, token: TOKEN, backoffMs: 20, maxRestarts: 2, windowMs: 60000 });
  try {
    sup.start({ kind: 'module', nodeId: 'echo-3', module: ECHO, args: { path: 'test/e3', crashAfterMs: 50 }, paths: ['test/e3'] });
    await waitFor(() => sup.get('echo-3')?.state === 'failed', 30000);
    const st = sup.get('echo-3')!;
    assert.is(st.restarts, 2);
    assert.match(st.gaveUp!, /3 crashes/);
    assert.is(st.lastExit!.code, 3);
  } finally {
    await sup.stopAll();
    await control.close();
  }
});

test('start of a live process with the same spec adopts it, another spec is refused; stop forgets it', async () => {
  const control = await startControl();
  const sup = new NodeSupervisor(control, { host: 'local', controlUrl: control.url!, token: TOKEN, backoffMs: 50 });
  const spec = { kind: 'module' as const, nodeId: 'echo-4', module: ECHO, args: { path: 'test/e4' }, paths: ['test/e4'] };
  try {
    sup.start(spec);
    await waitFor(() => sup.get('echo-4')?.state === 'running', 15000);
    const pid = sup.get('echo-4')!.pid;
    const again = sup.start({ ...spec, args: { path: 'test/e4' } });
    assert.is(again.pid, pid, 'the same spec: adopted, not relaunched');
    assert.is(again.state, 'running');
    try {
      sup.start({ ...spec, args: { path: 'test/e4b' } });
      assert.unreachable('another spec was accepted');
    } catch (e) {
      assert.is((e as { code?: string }).code, 'BAD_REQUEST');
    }
    assert.is(((await control.ref('test/e4').query({ type: 'pid' }, 2000)) as any).pid, pid);
    await sup.stop('echo-4');
    assert.is(sup.get('echo-4'), undefined);
    assert.not.ok(sup.status().some((p) => p.nodeId === 'echo-4'));
  } finally {
    await sup.stopAll();
    await control.close();
  }
});

test.run();
