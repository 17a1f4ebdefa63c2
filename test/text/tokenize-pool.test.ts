// The tokenizer pool: worker threads (tsx registered inside them) give the same ids as the
// tokenizer inline, for text and conversations; tokenizer errors come back typed; a long text
// is tokenized while the event loop stays free; closed pools refuse.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Llama3PresetTokenizer } from '../../actors/text/llama3.ts';
import { TokenizePool } from '../../actors/text/tokenize-pool.ts';

const tok = Llama3PresetTokenizer.get();
const pool = new TokenizePool(tok.source, 1);
test.after(() => pool.close());

test('the pool tokenizes as the tokenizer does', async () => {
  const text = 'Hello, wörld! 🚀 '.repeat(50);
  assert.equal([...(await pool.encode(text, true))], tok.encode(text));
  assert.equal([...(await pool.encode(text, false))], tok.encode(text, { addBos: false }));
  const messages = [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello' }];
  assert.equal([...(await pool.applyChatTemplate(messages, {}))], tok.applyChatTemplate(messages));
  assert.equal([...(await pool.applyChatTemplate(messages, { continueFinalMessage: true }))], tok.applyChatTemplate(messages, { continueFinalMessage: true }));
});

test('errors are typed; the loop keeps turning while a long text is tokenized', async () => {
  try {
    await pool.applyChatTemplate([], {});
    assert.unreachable('empty messages accepted');
  } catch (e) {
    assert.is((e as any).code, 'BAD_REQUEST');
  }
  const big = 'lorem ipsum dolor sit amet '.repeat(20_000);
  let numTicks = 0;
  let worstGap = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    worstGap = Math.max(worstGap, now - last);
    last = now;
    numTicks++;
  }, 5);
  const ids = await pool.encode(big, true);
  clearInterval(timer);
  console.log(`540 kB tokenized in the pool: ${ids.length} ids, ${numTicks} timer ticks meanwhile, worst gap ${worstGap.toFixed(1)} ms`);
  assert.ok(ids.length > 100_000);
  assert.ok(numTicks >= 2, 'the event loop ran while the worker tokenized');
});

test('a closed pool refuses', async () => {
  const p = new TokenizePool(tok.source, 1);
  await p.close();
  try {
    await p.encode('x', true);
    assert.unreachable('closed pool answered');
  } catch (e) {
    assert.is((e as any).code, 'NATIVE_ERROR');
  }
});

test.run();
