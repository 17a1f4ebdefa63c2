/**
 * Step-failure isolation (EngineCore.forwardIsolated): a forward that throws is retried once
 * split in two halves; a half that fails again ends only its own requests with STEP_FAILED
 * (naming the step's shape and the backend's error); nothing else is touched, pages come back.
 * Failures are forced with the test hook (`failNextSteps`, engines started with testHooks).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { engineHandler } from '../../actors/engine/actor.ts';
import { isMicroserveError } from '../../common/errors.ts';
import type { LoadedModel } from '../../native/index.ts';
import { CASES, Collector, greedy, makeCore, openFixture, run, usedPages } from './helpers.ts';

const models: LoadedModel[] = [];
async function fixture() {
  const m = await openFixture(64, 16);
  models.push(m);
  return m;
}
test.after(() => models.forEach((m) => m.backend.close()));

test('the hook is refused unless the engine runs with test hooks (and is not an HTTP route)', async () => {
  const c = new Collector();
  const core = makeCore(await fixture(), { collector: c });
  try {
    await engineHandler(core)({ type: 'test_fail_steps', count: 1 }, null as never);
    assert.unreachable('accepted test_fail_steps without test hooks');
  } catch (e) {
    assert.ok(isMicroserveError(e, 'BAD_MESSAGE'), String(e));
  }
  const hooked = makeCore(await fixture(), { collector: c, name: 'h', testHooks: true });
  assert.equal(await engineHandler(hooked)({ type: 'test_fail_steps', count: 2 }, null as never), { numStepsToFail: 2 });
  try {
    hooked.failNextSteps(-1);
    assert.unreachable('accepted a negative count');
  } catch (e) {
    assert.ok(isMicroserveError(e, 'BAD_REQUEST'), String(e));
  }
});

// both orders of the engine loop (EngineCoreOptions.overlap)
for (const overlap of [true, false]) {
  const mode = overlap ? 'overlap' : 'no overlap';

  test(`${mode}: one failed step: retried split in two, every request completes with the reference tokens`, async () => {
    const c = new Collector();
    const core = makeCore(await fixture(), { overlap, collector: c, testHooks: true });
    core.failNextSteps(1);
    const streams = await Promise.all(CASES.map((cs, i) => run(core, c, `a${i}`, cs.prompt_ids, greedy(32))));
    streams.forEach((s, i) => {
      assert.is(s.finish, 'length', `request ${i}`);
      assert.equal(s.tokens, CASES[i].greedy_ids, `request ${i}`);
    });
    const k = core.counters;
    assert.equal([k.stepFailures, k.stepRetries, k.requestsFailedByStep], [1, 1, 0]);
    await core.whenIdle();
    assert.is(usedPages(core), 0);
    core.kv.checkIntegrity();
  });

  test(`${mode}: a step that fails again in both halves fails only its own requests, with STEP_FAILED and its shape`, async () => {
    const c = new Collector();
    const core = makeCore(await fixture(), { overlap, collector: c, testHooks: true });
    core.failNextSteps(3); // the step, then both halves
    const [a, b] = [CASES[0], CASES[1]];
    const failed = await Promise.all([run(core, c, 'f0', a.prompt_ids, greedy(32)), run(core, c, 'f1', b.prompt_ids, greedy(32))]);
    for (const s of failed) {
      assert.is(s.finish, 'error');
      assert.equal(s.tokens, []);
      assert.is(s.error?.code, 'STEP_FAILED');
    }
    const numTokens = a.prompt_ids.length + b.prompt_ids.length;
    assert.match(failed[0].error!.message, `a step of 2 sequences / ${numTokens} tokens failed`);
    assert.match(failed[0].error!.message, 'NATIVE_ERROR: forced step failure (test hook)');
    assert.match(failed[0].error!.message, `its half of 1 sequences / ${a.prompt_ids.length} tokens failed again`);
    assert.match(failed[1].error!.message, `its half of 1 sequences / ${b.prompt_ids.length} tokens failed again`);
    const k = core.counters;
    assert.equal([k.stepFailures, k.stepRetries, k.requestsFailedByStep], [3, 1, 2]);
    // the engine goes on serving: a later request, and a lone one whose step fails once
    const after = await run(core, c, 'ok', CASES[2].prompt_ids, greedy(32));
    assert.equal(after.tokens, CASES[2].greedy_ids);
    core.failNextSteps(1);
    const lone = await run(core, c, 'lone', CASES[0].prompt_ids, greedy(32));
    assert.is(lone.error?.code, 'STEP_FAILED', 'a step of one sequence is not split');
    assert.is(core.counters.stepRetries, 1);
    assert.equal(c.problems, []);
    await core.whenIdle();
    assert.is(usedPages(core), 0);
    core.kv.checkIntegrity();
  });

  test(`${mode}: mid-decode: a failing half ends its requests after their tokens; the other half goes on`, async () => {
    const c = new Collector();
    const core = makeCore(await fixture(), { overlap, collector: c, testHooks: true });
    const ids = CASES.map((_, i) => `m${i}`);
    const done = CASES.map((cs, i) => run(core, c, ids[i], cs.prompt_ids, greedy(32)));
    // once every request has streamed a few tokens: fail the next step and its first half
    while (!ids.every((id) => c.get(id).tokens.length >= 4)) await new Promise((r) => setTimeout(r, 1));
    core.failNextSteps(2);
    const streams = await Promise.all(done);
    const ok = streams.filter((s) => s.finish === 'length');
    const bad = streams.filter((s) => s.finish === 'error');
    assert.is(bad.length, 2, 'the first half (2 of 3) failed');
    assert.is(ok.length, 1);
    streams.forEach((s, i) => {
      // every stream is a prefix of the reference: nothing repeated, nothing dropped
      assert.equal(s.tokens, CASES[i].greedy_ids.slice(0, s.tokens.length), `request ${i}`);
      if (s.finish === 'error') assert.is(s.error?.code, 'STEP_FAILED');
      else assert.is(s.tokens.length, 32);
    });
    await core.whenIdle();
    assert.is(usedPages(core), 0);
    core.kv.checkIntegrity();
  });
}

test.run();
