/**
 * A P/D split of a non-Llama family equals one engine: a tiny Qwen3 checkpoint (q/k norms,
 * head_dim 32 ≠ hidden / heads) and a tiny Qwen2 one (q/k/v biases) on two engine cores, wired
 * through prep_recv / remote_send / start_generate with kv_write straight into D. The tokens of
 * every split (plain P/D, balanced, context migration of a cached prefix) equal one engine alone,
 * and the page bytes D received are the family's (kvHeads × headDim per token and layer).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EngineCore } from '../../actors/engine/engine-core.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { makeFamilyCheckpoint, type FamilyName } from '../native/family-checkpoints.ts';
import { Collector, directTransport, greedy, makeCore, run, usedPages } from './helpers.ts';

const PS = 16;
const GEN = 12;
const dir = mkdtempSync(join(tmpdir(), 'ms-family-split-'));
const models: LoadedModel[] = [];
test.after(() => {
  for (const m of models) m.backend.close();
  rmSync(dir, { recursive: true, force: true });
});

function prompt(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => 3 + ((i * 7919 + seed * 104729) % 1000));
}

async function open(family: FamilyName): Promise<LoadedModel> {
  const m = await openModel(join(dir, family), { numPages: 48, pageSize: PS, numThreads: 2 });
  models.push(m);
  return m;
}

for (const family of ['qwen3', 'qwen2'] as const) {
  test(`${family}: P/D, balanced P/D and migration give the tokens of one engine`, async () => {
    makeFamilyCheckpoint(family, join(dir, family));
    const [mp, md, mo] = [await open(family), await open(family), await open(family)];
    const kvBytesPerToken = 2 * mp.config.numLayers * mp.config.numKvHeads * mp.config.headDim * 4;
    assert.is(mp.backend.pageBytes, PS * kvBytesPerToken);

    const cP = new Collector();
    const cD = new Collector();
    const cO = new Collector();
    const refs: { P?: EngineCore; D?: EngineCore } = {};
    const P = (refs.P = makeCore(mp, { name: 'p', collector: cP, maxBatchTokens: 24, pickTransport: () => directTransport(() => refs.D!) }));
    const D = (refs.D = makeCore(md, { name: 'd', collector: cD, maxBatchTokens: 24, pickTransport: () => directTransport(() => refs.P!) }));
    const one = makeCore(mo, { name: 'one', collector: cO });

    const prompts = [prompt(5, 1), prompt(23, 2), prompt(70, 3)];
    for (const [i, p] of prompts.entries()) {
      const alone = (await run(one, cO, `one-${i}`, p, greedy(GEN))).tokens;
      assert.is(alone.length, GEN);
      for (const end of [p.length - 1, Math.max(1, Math.floor(p.length / 2))]) {
        const id = `${i}-${end}`;
        const d0 = D.counters.bytesReceived;
        const { matchedLen, kvAddr } = D.prepRecv({ id, promptIds: p, end });
        await P.remoteSend({ id, promptIds: p, begin: matchedLen, end, kvAddr });
        D.startGenerate({ id, promptIds: p, begin: end, sampling: greedy(GEN), replyTo: 'router' });
        const s = await cD.done(id);
        assert.equal(s.tokens, alone, `${family}, prompt ${i}, end ${end}`);
        const got = D.counters.bytesReceived - d0;  // whole pages of [matchedLen, end)
        assert.ok(got % mp.backend.pageBytes === 0 && got <= Math.ceil(end / PS) * mp.backend.pageBytes && (got > 0) === (matchedLen < end), `${family}: ${got} bytes`);
      }
    }
    // Context migration: P already holds the 70-token prompt; D recomputes nothing of it.
    const p = prompts[2];
    const alone = cO.streams.get('one-2')!.tokens;
    const fresh = makeCore(await open(family), { name: 'd2', collector: cD, pickTransport: () => directTransport(() => refs.P!) });
    const pf0 = P.counters.tokensPrefilled;
    refs.D = fresh;
    const { matchedLen, kvAddr } = fresh.prepRecv({ id: 'mig', promptIds: p, end: 64 });
    assert.is(matchedLen, 0);
    await P.remoteSend({ id: 'mig', promptIds: p, begin: 0, end: 64, kvAddr });
    assert.is(P.counters.tokensPrefilled, pf0, 'P computed nothing: the prefix was cached');
    fresh.startGenerate({ id: 'mig', promptIds: p, begin: 64, sampling: greedy(GEN), replyTo: 'router' });
    assert.equal((await cD.done('mig')).tokens, alone);
    assert.is(fresh.counters.tokensPrefilled, p.length - 64);

    for (const c of [P, D, fresh, one]) {
      await c.whenIdle();
      c.kv.checkIntegrity();
      assert.is(usedPages(c), 0, `${c.name}: pages in use after idle`);
    }
    assert.equal([cD.problems, cO.problems], [[], []]);
  });
}

test.run();
