/**
 * A tokenizer worker thread: loads the model's tokenizer once (workerData.source) and answers
 * `encode` / `chat` requests with Int32Array ids (transferred), or `{ error: { code, message } }`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { isMicroserveError } from '../../common/errors.ts';
import { loadTokenizer } from './loader.ts';
import type { PoolRequest, PoolReply } from './tokenize-pool.ts';

const tokenizer = await loadTokenizer(workerData.source);
const port = parentPort!;

port.on('message', (req: PoolRequest) => {
  let reply: PoolReply;
  try {
    if (!tokenizer) throw new Error('this model has no tokenizer');
    const ids = req.op === 'encode' ? tokenizer.encode(req.text, { addBos: req.addBos }) : tokenizer.applyChatTemplate(req.messages, req.opts);
    const out = Int32Array.from(ids);
    reply = { id: req.id, ids: out };
    port.postMessage(reply, [out.buffer]);
    return;
  } catch (e) {
    reply = { id: req.id, error: { code: isMicroserveError(e) ? e.code : 'BAD_REQUEST', message: (e as Error).message } };
  }
  port.postMessage(reply);
});
port.postMessage({ id: 0, ready: true });
