/**
 * The memory plan in words, one line, for logs, `status` and the `up` banner:
 * `weights 15.0 GiB, arena 1.2 GiB, graphs 0.3 GiB, KV 110.2 GiB (56300 pages, 900800 tokens),
 *  max request 131072 tokens, step ≤ 8192 tokens / 256 seqs, device free 13.1 of 139.8 GiB`.
 */
import type { MemoryPlan } from '../../native/backend.ts';

/** Bytes with a binary unit (B, KiB, MiB, GiB), one decimal past KiB. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

export function describePlan(p: MemoryPlan): string {
  const where = p.isHost ? 'host' : 'device';
  const graphs = p.isHost ? '' : `, graphs ${formatBytes(p.graphBytes)} (${p.numGraphs})`;
  const free = p.isHost ? '' : `, device free ${formatBytes(p.deviceFree)} of ${formatBytes(p.deviceTotal)}`;
  return (
    `${where}: weights ${formatBytes(p.weightsBytes)}, arena ${formatBytes(p.arenaBytes)}${graphs}, ` +
    `KV ${formatBytes(p.kvBytes)} (${p.numPages} pages, ${p.kvTokens} tokens), max request ${p.maxRequestTokens} tokens, ` +
    `step <= ${p.maxBatchTokens} tokens / ${p.maxNumSeqs} seqs${free}`
  );
}
