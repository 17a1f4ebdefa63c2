// Child process of fixture.test.ts: runs the fixture's reference checks under the kernel set
// chosen by MS_CPU_ISA and prints one JSON line { device, maxRelL2, greedyOk }.
import { openModel } from '../../native/index.ts';
import { FIXTURE, REFERENCE, greedyBatch, pageRange, relL2 } from './helpers.ts';

const m = await openModel(FIXTURE, { numPages: 32, numThreads: 2 });
let maxRelL2 = 0;
let greedyOk = true;
let next = 0;
for (const c of REFERENCE.cases) {
  const n = Math.ceil((c.prompt_ids.length + 32) / 16);
  const [r] = await greedyBatch(m.backend, [c.prompt_ids], 32, 7, [pageRange(next, n)]);
  next += n;
  maxRelL2 = Math.max(maxRelL2, relL2(r.firstLogits, c.last_logits));
  greedyOk &&= JSON.stringify(r.ids) === JSON.stringify(c.greedy_ids);
  const full = await m.backend.forward({ seqs: [{ tokens: Int32Array.from(c.prompt_ids), startPos: 0, pageTable: pageRange(next - n, n) }] });
  maxRelL2 = Math.max(maxRelL2, relL2(full, c.last_logits));
}
process.stdout.write(JSON.stringify({ device: (m.backend as unknown as { deviceName: string }).deviceName, maxRelL2, greedyOk }) + '\n');
m.backend.close();
