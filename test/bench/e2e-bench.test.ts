/**
 * Issue 8's acceptance run, end to end on CPU: `microserve bench` starts the default topology
 * itself (`microserve up`, two CPU engines serving kjv-chat; random prompt ids drawn from its own
 * vocabulary, as the bench asks /v1/models), runs the same 12-request trace under dp
 * and pd (switched by hot reload), writes the three reports, and stops the cluster. The client's
 * counts must equal the router's /metrics exactly; the latency means must agree within the
 * tolerance below (the client's interval contains the server's: send → [DONE] vs arrival at the
 * router → last token, so the client's mean is the larger by HTTP, JSON and event-loop time).
 *
 * Skips (with a message) until the whole system exists: the actor runtime, the router and `up`.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { ResultsFile } from '../../bench/runner/results.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const NEEDED = ['actors/runtime/system.ts', 'actors/router/index.ts', 'supervisors/up.ts', 'bin/commands/up.ts'];
const missing = NEEDED.filter((f) => !existsSync(join(root, f)));

/** Client mean may exceed the server's by at most this (ms) plus this share of the server's. */
const TOLERANCE_MS = 100;
const TOLERANCE_SHARE = 0.3;
/** The server's mean may exceed the client's only by rounding and clock granularity (ms). */
const SLACK_MS = 2;

function agree(what: string, client: number, server: number | null) {
  assert.ok(server !== null, `${what}: the server reported no mean`);
  assert.ok(client >= server! - SLACK_MS, `${what}: client mean ${client.toFixed(1)} ms < server mean ${server!.toFixed(1)} ms`);
  const limit = server! + TOLERANCE_MS + TOLERANCE_SHARE * server!;
  assert.ok(client <= limit, `${what}: client mean ${client.toFixed(1)} ms exceeds server mean ${server!.toFixed(1)} ms beyond the tolerance (${limit.toFixed(1)} ms)`);
}

if (missing.length > 0) {
  test(`skipped: the system is not complete yet (missing ${missing.join(', ')})`, () => {});
} else {
  test('microserve bench on CPU: dp vs pd, counts equal /metrics, means agree', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-e2e-'));
    const args = ['bin/microserve.js', 'bench', '--dataset-name', 'random', '--random-input-len', '64', '--random-output-len', '8', '--num-prompts', '12', '--request-rate', '4', '--strategies', 'dp,pd', '--result-dir', dir, '--no-progress'];
    const child = spawn(process.execPath, args, { cwd: root, env: { ...process.env, MICROSERVE_HOME: mkdtempSync(join(tmpdir(), 'bench-e2e-home-')) }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    assert.is(code, 0, `microserve bench failed:\n${out.slice(-4000)}`);
    for (const f of ['results.json', 'results.md', 'report.html']) assert.ok(existsSync(join(dir, f)), `${f} missing`);

    const r = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as ResultsFile;
    assert.equal(r.points.map((p) => [p.strategy, p.requestRate]), [['dp', 4], ['pd', 4]]);
    // the default model's ordinary tokens (4096 ids, the last 5 special), from /v1/models
    assert.equal([r.config.model, r.config.dataset.tokenIdMax], ['kjv-chat', 4091]);
    for (const p of r.points) {
      const s = p.server;
      assert.ok(s, `${p.strategy}: no server metrics`);
      assert.equal([p.completed, p.failed], [12, 0], `${p.strategy}: ${JSON.stringify(p.errors)}`);
      assert.is(s!.requests, p.completed + p.failed, `${p.strategy}: requests`);
      assert.equal(s!.requestsByFinish, { length: 12 }, `${p.strategy}: finish reasons`);
      assert.is(p.totalOutputTokens, 12 * 8);
      assert.is(s!.generationTokens, p.totalOutputTokens, `${p.strategy}: output tokens`);
      assert.is(p.totalInputTokens, 12 * 64);
      assert.is(s!.promptTokens, p.totalInputTokens, `${p.strategy}: prompt tokens`);
      assert.is(s!.httpErrors, 0);
      agree(`${p.strategy} E2EL`, p.e2elMs.mean, s!.e2elMeanMs);
      agree(`${p.strategy} TTFT`, p.ttftMs.mean, s!.ttftMeanMs);
    }
    assert.ok(r.points[1].switch && r.points[1].switch.changes.length > 0, 'the switch to pd was applied');
    const md = readFileSync(join(dir, 'results.md'), 'utf8');
    assert.match(md, /\| dp \| 4 \| 12 \| 0 \|/);
    assert.match(md, /\| pd \| 4 \| 12 \| 0 \|/);
  });
}

test.run();
