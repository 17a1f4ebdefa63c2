/**
 * Actor supervision (runtime/local-actors.ts + restart-policy.ts): a killed actor comes back with
 * its state rebuilt and its queue kept; a crash loop ends `failed`; `restart` brings it back.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ActorSystem } from '../../actors/runtime/system.ts';
import { CrashWindow } from '../../actors/runtime/restart-policy.ts';
import { TOKEN, waitFor } from './helpers.ts';

const start = (nodeId: string) => ActorSystem.start({ nodeId, token: TOKEN, listen: null });

/** A counter actor: its state is rebuilt by `reset` after each restart. */
function counter() {
  let n = 0;
  return (msg: any) => (msg.type === 'inc' ? ++n : msg.type === 'boom' ? Promise.reject(new Error('boom')) : n);
}

test('the restart policy: backoff doubles per failure in the window, capped; gives up past maxRestarts', () => {
  const w = new CrashWindow({ maxRestarts: 3, windowMs: 1000, backoffMs: 100, maxBackoffMs: 250 });
  assert.equal([w.record('a', 0).delayMs, w.record('a', 1).delayMs, w.record('a', 2).delayMs], [100, 200, 250]);
  assert.match(w.record('a', 3).gaveUp!, /4 failures within 1000 ms \(last: a\)/);
  assert.is(w.record('a', 5000).delayMs, 100); // the window slid past the old failures
  w.clear();
  assert.is(w.record('a', 5001).delayMs, 100);
});

test('a killed actor comes back with fresh state; messages sent while it was down wait and are answered in order', async () => {
  const sys = await start('sup-a');
  try {
    sys.spawn('test/c', counter(), { reset: counter, restartPolicy: { backoffMs: 200 } });
    assert.is(await sys.ref('test/c').query({ type: 'inc' }, 1000), 1);
    assert.ok(sys.kill('test/c'));
    assert.is(sys.supervision().find((a) => a.path === 'test/c')!.state, 'restarting');
    const during = [sys.ref('test/c').query({ type: 'inc' }, 5000), sys.ref('test/c').query({ type: 'inc' }, 5000)];
    assert.equal(await Promise.all(during), [1, 2]); // state re-initialised, queue kept
    const s = sys.supervision().find((a) => a.path === 'test/c')!;
    assert.is(s.state, 'running');
    assert.is(s.restarts, 1);
    assert.is(s.lastExit!.reason, 'killed');
    assert.ok(sys.listActors().some((a) => a.path === 'test/c'), 'stays in the directory while down');
  } finally {
    await sys.close();
  }
});

test('messages already in the mailbox when the actor is killed are not lost: the next incarnation handles them in order', async () => {
  const sys = await start('sup-e');
  try {
    sys.spawn('test/c', counter(), { reset: counter, restartPolicy: { backoffMs: 20 } });
    const pending = Array.from({ length: 50 }, () => sys.ref('test/c').query({ type: 'inc' }, 5000));
    sys.kill('test/c'); // before nact handled any of them
    assert.equal(await Promise.all(pending), Array.from({ length: 50 }, (_, i) => i + 1));
  } finally {
    await sys.close();
  }
});

test("an onCrash 'stop' decision restarts the actor like a kill", async () => {
  const sys = await start('sup-b');
  try {
    sys.spawn('test/c', counter(), { reset: counter, onCrash: () => 'stop', restartPolicy: { backoffMs: 20 } });
    await sys.ref('test/c').query({ type: 'inc' }, 1000);
    const err = await sys.ref('test/c').query<any>({ type: 'boom' }, 1000).catch((e: any) => e);
    assert.is(err.code, 'ACTOR_CRASHED');
    await waitFor(() => sys.supervision().find((a) => a.path === 'test/c')!.restarts === 1, 5000);
    assert.is(await sys.ref('test/c').query({ type: 'get' }, 1000), 0);
    assert.match(sys.supervision().find((a) => a.path === 'test/c')!.lastExit!.reason, /crashed: boom/);
  } finally {
    await sys.close();
  }
});

test('a crash loop ends failed with the reason (GAVE_UP to callers); restart brings it back', async () => {
  const sys = await start('sup-c');
  try {
    sys.spawn('test/c', counter(), { reset: counter, restartPolicy: { backoffMs: 10, maxRestarts: 2 } });
    for (let i = 0; i < 3; i++) {
      await waitFor(() => sys.supervision().find((a) => a.path === 'test/c')!.state !== 'restarting', 5000);
      sys.kill('test/c');
    }
    const s = sys.supervision().find((a) => a.path === 'test/c')!;
    assert.is(s.state, 'failed');
    assert.match(s.failed!, /3 failures within 60000 ms/);
    const err = await sys.ref('test/c').query<any>({ type: 'get' }, 1000).catch((e: any) => e);
    assert.is(err.code, 'GAVE_UP');
    assert.ok(sys.restart('test/c'));
    assert.is(await sys.ref('test/c').query({ type: 'inc' }, 1000), 1);
    assert.is(sys.supervision().find((a) => a.path === 'test/c')!.state, 'running');
    assert.not.ok(sys.kill('test/none'));
  } finally {
    await sys.close();
  }
});

test('stop is permanent: no restart, callers get ACTOR_STOPPED', async () => {
  const sys = await start('sup-d');
  try {
    sys.spawn('test/c', counter(), { restartPolicy: { backoffMs: 10 } });
    sys.stop('test/c');
    await new Promise((r) => setTimeout(r, 100));
    const err = await sys.ref('test/c').query<any>({ type: 'get' }, 1000).catch((e: any) => e);
    assert.is(err.code, 'ACTOR_STOPPED');
    assert.not.ok(sys.supervision().some((a) => a.path === 'test/c'));
  } finally {
    await sys.close();
  }
});

test.run();
