// Entry of a tokenizer worker thread (tokenize-pool.ts). `node --import tsx` does not reach
// worker threads on Node 20, so tsx is registered here before the TypeScript module loads.
import { register } from 'tsx/esm/api';

register();
await import('./tokenize-worker.ts');
