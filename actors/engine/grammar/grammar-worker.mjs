// Entry of a grammar worker thread (worker-client.ts). `node --import tsx` does not reach worker
// threads on Node 20, so tsx is registered here before the TypeScript module loads.
import { register } from 'tsx/esm/api';

register();
await import('./grammar-worker.ts');
