// The event-loop monitor: a single synchronous block is seen once, with its length, and counted;
// short tasks are not; the histogram reports the delay.
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

test('a 600 ms block is seen once, about as long as it was; 20 ms tasks are not', async () => {
  const seen: number[] = [];
  const m = new LoopMonitor('test', { warnMs: 250, probeMs: 50, onBlock: (ms) => seen.push(ms) });
  try {
    await sleep(120);
    for (let i = 0; i < 5; i++) {
      blockFor(20);
      await sleep(30);
    }
    assert.is(m.stats().numBlocks, 0, 'short tasks are no blocks');
    blockFor(600);
    await sleep(200);
    const s = m.stats();
    assert.is(s.numBlocks, 1);
    assert.is(seen.length, 1);
    assert.ok(s.maxBlockMs >= 450 && s.maxBlockMs < 2000, `block ${s.maxBlockMs} ms`);
    assert.ok(s.maxMs >= 450, `histogram max ${s.maxMs} ms`);
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
