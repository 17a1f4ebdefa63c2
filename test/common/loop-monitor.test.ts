// The event-loop monitor: a single synchronous block is seen, with its length, logged and counted;
// the histogram reports the delay.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LoopMonitor } from '../../common/loop-monitor.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function blockFor(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    /* busy: the loop is blocked */
  }
}

test('a 600 ms block is seen as one block about as long as it was, logged and counted', async () => {
  const seen: number[] = [];
  const m = new LoopMonitor('test', { warnMs: 250, probeMs: 50, onBlock: (ms) => seen.push(ms) });
  try {
    await sleep(120);
    for (let i = 0; i < 5; i++) {
      blockFor(20); // short tasks: well under warnMs
      await sleep(30);
    }
    const n0 = m.stats().numBlocks; // 0 unless the machine itself stalled us
    blockFor(600);
    await sleep(200);
    const s = m.stats();
    assert.ok(s.numBlocks >= n0 + 1, `blocks ${n0} -> ${s.numBlocks}`);
    assert.ok(seen.some((ms) => ms >= 450 && ms < 2000), `blocks seen: ${seen.map(Math.round).join(', ')} ms`);
    assert.ok(s.maxBlockMs >= 450, `longest block ${s.maxBlockMs} ms`);
    assert.ok(s.maxMs >= 450, `histogram max ${s.maxMs} ms`);
    assert.ok(s.p99Ms <= s.maxMs && s.meanMs > 0);
    assert.is(s.role, 'test');
    assert.is(s.warnMs, 250);
  } finally {
    m.stop();
  }
});

test('bad options are refused', () => {
  assert.throws(() => new LoopMonitor('x', { warnMs: 0 }), /warnMs/);
});

test.run();
