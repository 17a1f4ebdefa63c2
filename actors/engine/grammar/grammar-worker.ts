/**
 * A grammar worker thread: one xgrammar instance for an engine (compile cache, the matchers of
 * the requests this worker serves, by handle) or for the router (checks only). An engine may run
 * several (grammars.ts). Calls are answered in order; a failure answers that call only (`error`,
 * or per-handle errors in `steps`).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { MicroserveError, isMicroserveError } from '../../../common/errors.ts';
import { GrammarChecker } from '../../text/grammar-spec.ts';
import { grammarVocabularyOf } from '../../text/loader.ts';
import { GrammarCompilerCache } from './compiler.ts';
import type { AcceptItem, GrammarCall, GrammarReply, GrammarStep, GrammarWorkerInit } from './protocol.ts';
import { RequestGrammar } from './request-grammar.ts';

const init = workerData as GrammarWorkerInit;
const port = parentPort!;
const checker = new GrammarChecker();
const vocabulary = init.tokenizer ? grammarVocabularyOf(init.tokenizer) : null;
const compiler = vocabulary ? new GrammarCompilerCache({ vocabulary, vocabSize: init.vocabSize, stopTokenIds: init.eosTokenIds, cacheSize: init.cacheSize }) : null;
const matchers = new Map<number, RequestGrammar>();

const lost = (handle: number): GrammarStep => ({ handle, mask: null, isComplete: false, error: { code: 'BAD_GRAMMAR', message: `no grammar ${handle}` } });
const wire = (e: unknown) => (isMicroserveError(e) ? e.toWire() : { code: 'BAD_GRAMMAR', message: (e as Error)?.message ?? String(e) });

function step(handle: number, g: RequestGrammar, transfer: ArrayBuffer[]): GrammarStep {
  if (g.isComplete) return { handle, mask: null, isComplete: true };
  const mask = g.mask.slice();
  transfer.push(mask.buffer);
  return { handle, mask, isComplete: false };
}

/** Each handle takes its token: out-of-grammar tokens, and completion where the matcher terminated or it is the request's last token. */
async function acceptAll(items: readonly AcceptItem[]): Promise<GrammarStep[]> {
  const steps: GrammarStep[] = [];
  for (const { handle, token, isLast } of items) {
    const g = matchers.get(handle);
    if (!g) steps.push(lost(handle));
    else if (!g.accept(token)) {
      steps.push({ handle, mask: null, isComplete: false, error: { code: 'NATIVE_ERROR', message: `the backend sampled token ${token} outside the request's grammar mask` } });
    } else {
      if (g.isTerminated || isLast) await g.next(); // completion now: the request's finish depends on it
      steps.push({ handle, mask: null, isComplete: (g.isTerminated || isLast) && g.isComplete });
    }
  }
  return steps;
}

async function answer(call: GrammarCall): Promise<void> {
  const transfer: ArrayBuffer[] = [];
  let reply: GrammarReply;
  try {
    switch (call.op) {
      case 'check':
        await checker.check(call.spec, call.field);
        reply = { seq: call.seq };
        break;
      case 'open': {
        if (!compiler) throw new MicroserveError('BAD_REQUEST', 'structured outputs need the model\'s tokenizer', { field: call.field });
        const entry = await compiler.compile(call.spec, call.field);
        const g = await RequestGrammar.open(entry, init.eosTokenIds, call.replay, call.field);
        matchers.set(call.handle, g);
        reply = { seq: call.seq, steps: [step(call.handle, g, transfer)], info: { numCached: compiler.size } };
        break;
      }
      case 'accept':
        reply = { seq: call.seq, steps: await acceptAll(call.items) };
        break;
      case 'fill': {
        if (call.accepts) port.postMessage({ seq: call.seq, accepted: await acceptAll(call.accepts), isPartial: true } satisfies GrammarReply); // the tokens before the masks after them
        const view = new Uint32Array(call.target);
        const steps: GrammarStep[] = [];
        for (const { handle, row } of call.items) {
          const g = matchers.get(handle);
          const at = row * call.words;
          if (!g) {
            view.fill(0xffffffff, at, at + call.words);
            steps.push(lost(handle));
            continue;
          }
          await g.next();
          if (g.isComplete) view.fill(0xffffffff, at, at + call.words);
          else view.set(g.mask.subarray(0, call.words), at);
          steps.push({ handle, mask: null, isComplete: g.isComplete });
        }
        reply = { seq: call.seq, steps };
        break;
      }
      case 'close':
        for (const h of call.handles) matchers.get(h)?.dispose(), matchers.delete(h);
        reply = { seq: call.seq };
        break;
    }
  } catch (e) {
    reply = { seq: call.seq, error: wire(e) };
  }
  port.postMessage(reply, transfer);
}

// one call at a time, in order: a matcher's tokens must be accepted in the order they were sampled
let chain = Promise.resolve();
port.on('message', (call: GrammarCall) => {
  chain = chain.then(() => answer(call));
});
port.postMessage({ seq: 0 });
