import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isMicroserveError } from '../../common/errors.ts';
import type { Plan } from '../../actors/router/types.ts';
import { applyTopology, type ApplyHooks } from '../../topology/apply.ts';
import { parseTopology } from '../../topology/load.ts';
import type { Topology } from '../../topology/types.ts';

const topo = (yaml: string): Topology => parseTopology(yaml, undefined, { numGpus: 2 });
const OLD = topo(`model: tiny
engines:
  - { name: e0, role: both }
  - { name: e1, role: both }
`);

/**
 * Hooks that record every call in order and advance a virtual clock by a fixed cost per call,
 * so the report's timings can be checked exactly.
 */
function recorder(costs: Partial<Record<keyof ApplyHooks, number>> = {}, fail: Partial<Record<keyof ApplyHooks, string>> = {}) {
  const clock = { t: 1000 };
  const log: string[] = [];
  const plans: Plan[] = [];
  const step = async (hook: keyof ApplyHooks, what: string) => {
    log.push(what);
    await new Promise((r) => setImmediate(r));
    clock.t += costs[hook] ?? 0;
    if (fail[hook] && what.includes(fail[hook]!)) throw new Error(`${what} failed`);
  };
  const hooks: ApplyHooks = {
    spawnEngine: (s) => step('spawnEngine', `spawn ${s.name}(${s.role})`),
    setRole: (n, r) => step('setRole', `role ${n}=${r}`),
    setPlan: async (p) => {
      plans.push(p);
      await step('setPlan', `plan ${p.strategy} ${p.engines.map((e) => `${e.name}:${e.role}`).join(',')}`);
      return { version: plans.length + 1 };
    },
    drainAndStop: (n) => step('drainAndStop', `drain ${n}`),
    restartEngine: (s, isRollback) => step('restartEngine', `restart ${s.name}${isRollback ? ` back to kvPages ${s.kvPages}` : ''}`),
  };
  return { hooks, log, plans, clock, now: () => clock.t };
}

test('order: spawn, roles, plan, then drain; reconfigure time ends at the plan ack, drain apart', async () => {
  const next = topo(`model: tiny
router: { strategy: balanced-pd, params: { ratio: 0.1 } }
engines:
  - { name: e0, role: prefill }
  - { name: e2, role: decode }
`);
  const r = recorder({ spawnEngine: 300, setRole: 2, setPlan: 1, drainAndStop: 500 });
  const report = await applyTopology(OLD, next, r.hooks, { version: 3, receivedAt: 990, now: r.now });
  assert.equal(r.log, ['spawn e2(decode)', 'role e0=prefill', 'plan balanced-pd e0:prefill,e2:decode', 'drain e1']);
  assert.equal(r.plans[0], { engines: [{ name: 'e0', role: 'prefill' }, { name: 'e2', role: 'decode' }], strategy: 'balanced-pd', params: { ratio: 0.1 } });
  assert.is(report.version, 4);
  assert.is(report.spawnMs, 300);
  assert.is(report.reconfigureMs, 10 + 300 + 2 + 1); // from receipt (990) to the ack
  assert.is(report.drainMs, 500);
  assert.equal(report.planAck, { version: 2 });
  assert.equal(report.changes, ['+ engine e2 (decode, cpu)', '- engine e1 (drained, stopped)', 'engine e0: role both → prefill', 'strategy dp → balanced-pd {"ratio":0.1}']);
});

test('strategy switch alone: one plan call, nothing else', async () => {
  const r = recorder({ setPlan: 3 });
  const next = { ...OLD, router: { ...OLD.router, strategy: 'pd' } };
  const report = await applyTopology(OLD, next, r.hooks, { now: r.now });
  assert.equal(r.log, ['plan pd e0:both,e1:both']);
  assert.equal([report.version, report.reconfigureMs, report.drainMs], [2, 3, 0]);
});

test('nothing changed: no hook runs, the version stays', async () => {
  const r = recorder();
  const report = await applyTopology(OLD, topo(`model: tiny\nengines:\n  - { name: e0 }\n  - { name: e1 }\n`), r.hooks, { version: 5, now: r.now });
  assert.equal([r.log, report.version, report.changes], [[], 5, []]);
});

test('a failed plan undoes roles and spawned engines and leaves removed engines running', async () => {
  const next = topo(`model: tiny\nrouter: { strategy: pd }\nengines:\n  - { name: e0, role: prefill }\n  - { name: e3, role: decode }\n`);
  const r = recorder({}, { setPlan: 'plan' });
  try {
    await applyTopology(OLD, next, r.hooks, { now: r.now });
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, /plan pd .* failed/);
  }
  assert.equal(r.log, ['spawn e3(decode)', 'role e0=prefill', 'plan pd e0:prefill,e3:decode', 'role e0=both', 'drain e3']);
});

test('a failed restart rolls back for real: the engine restarted with its previous spec, the previous plan handed back', async () => {
  const next = topo(`model: tiny\nengines:\n  - { name: e0 }\n  - { name: e1, kvPages: 100000000 }\n`);
  const r = recorder({}, { restartEngine: 'restart e1' }); // the rollback's restart is logged, and fails too: logged, the cause rethrown
  await applyTopology(OLD, next, r.hooks, { now: r.now }).then(
    () => assert.unreachable(),
    (e) => assert.match(e.message, /restart e1/),
  );
  const old = OLD.engines.find((e) => e.name === 'e1')!;
  assert.equal(r.log, ['plan dp e0:both', 'restart e1', `restart e1 back to kvPages ${old.kvPages}`, 'plan dp e0:both,e1:both']);
});

test('a failed spawn stops the engines already spawned and sets nothing', async () => {
  const next = topo(`model: tiny\nengines:\n  - { name: e0 }\n  - { name: e1 }\n  - { name: e2 }\n  - { name: e3 }\n`);
  const r = recorder({}, { spawnEngine: 'e3' });
  await applyTopology(OLD, next, r.hooks, { now: r.now }).then(
    () => assert.unreachable(),
    (e) => assert.match(e.message, /spawn e3/),
  );
  assert.equal(r.log, ['spawn e2(both)', 'spawn e3(both)', 'drain e2']);
});

test('restarts: interim plan without them, one at a time, then the full plan', async () => {
  const next = topo(`model: tiny
engines:
  - { name: e0, kvPages: 256 }
  - { name: e1, threads: 4 }
  - { name: e2 }
`);
  const r = recorder({ restartEngine: 100, spawnEngine: 50 });
  const report = await applyTopology(OLD, next, r.hooks, { now: r.now });
  assert.equal(r.log, ['spawn e2(both)', 'plan dp e2:both', 'restart e0', 'restart e1', 'plan dp e0:both,e1:both,e2:both']);
  assert.equal([report.restartMs, report.spawnMs, report.reconfigureMs], [200, 50, 250]);
});

test('restarting every engine keeps the old plan until they are back', async () => {
  const next = topo(`model: tiny\ntransport: host\nengines:\n  - { name: e0 }\n  - { name: e1 }\n`);
  const r = recorder();
  await applyTopology(OLD, next, r.hooks, { now: r.now });
  assert.equal(r.log, ['restart e0', 'restart e1', 'plan dp e0:both,e1:both']);
});

test('router port or control changes are refused before anything runs', async () => {
  const r = recorder();
  for (const next of [{ ...OLD, router: { ...OLD.router, port: 9001 } }, { ...OLD, control: { ...OLD.control, port: 7801 } }]) {
    await applyTopology(OLD, next, r.hooks, { now: r.now }).then(
      () => assert.unreachable(),
      (e) => assert.ok(isMicroserveError(e, 'TOPOLOGY_INVALID') && /cannot change while running/.test(e.message), e.message),
    );
  }
  assert.equal(r.log, []);
});

test('a removed engine that fails to stop does not fail the apply', async () => {
  const r = recorder({}, { drainAndStop: 'e1' });
  const report = await applyTopology(OLD, topo(`model: tiny\nengines:\n  - { name: e0 }\n`), r.hooks, { now: r.now });
  assert.equal(r.log, ['plan dp e0:both', 'drain e1']);
  assert.is(report.version, 2);
});

test.run();
