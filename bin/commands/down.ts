import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { MicroserveError } from '../../common/errors.ts';
import { connect } from '../../actors/runtime/client.ts';
import { isClusterAlive, readRunFile, removeRunFile, runDir, runFilePath } from '../../actors/runtime/token.ts';
import type { ClusterStatus } from '../../supervisors/cluster.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Alive and not a zombie (an exited process its parent has not reaped yet counts as gone). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
  } catch {
    return true; // no /proc
  }
}

/** The processes the cluster runs besides `up` itself (engines, module processes), from `status`. */
async function childProcesses(upPid: number): Promise<{ label: string; pid: number }[]> {
  const c = await connect();
  try {
    const st = await c.ref('control').query<ClusterStatus>({ type: 'status' }, 10_000);
    const byPid = new Map<number, string[]>();
    for (const a of st.actors) if (a.pid && a.pid !== upPid && a.host === 'local') byPid.set(a.pid, [...(byPid.get(a.pid) ?? []), a.path]);
    return [...byPid].map(([pid, paths]) => ({ pid, label: paths.join('+') }));
  } finally {
    await c.close();
  }
}

export function register(program: Command): void {
  program
    .command('down')
    .description('stop the cluster `microserve up` runs for this MICROSERVE_HOME: router, engines, supervisors; waits until every process has exited')
    .option('--timeout <ms>', 'how long to wait for a clean stop before SIGKILL', '60000')
    .action(async (o: { timeout: string }) => {
      const rf = readRunFile();
      if (!rf) throw new MicroserveError('CONNECTION_LOST', `no cluster is running for ${runDir()} (no ${runFilePath()})`);
      if (!isClusterAlive(rf.pid)) {
        removeRunFile(rf.pid);
        process.stdout.write(`no cluster was running: removed the stale run file of up pid ${rf.pid}\n`);
        return;
      }
      const t0 = Date.now();
      // what to check for orphans afterwards (best effort: a cluster still starting has no status)
      const children = rf.isStarting ? [] : await childProcesses(rf.pid).catch(() => []);
      process.kill(rf.pid, 'SIGTERM');
      const deadline = t0 + Number(o.timeout);
      while (isAlive(rf.pid) && Date.now() < deadline) await sleep(100);
      let killed = false;
      if (isAlive(rf.pid)) {
        process.kill(rf.pid, 'SIGKILL');
        killed = true;
        for (let i = 0; i < 100 && isAlive(rf.pid); i++) await sleep(50);
        removeRunFile(rf.pid);
      }
      // engines go with up; one that did not within a few seconds is an orphan: SIGKILL it
      const orphansBy = Date.now() + 5000;
      while (children.some((c) => isAlive(c.pid)) && Date.now() < orphansBy) await sleep(100);
      const orphans = children.filter((c) => isAlive(c.pid));
      for (const c of orphans) process.kill(c.pid, 'SIGKILL');
      const secs = ((Date.now() - t0) / 1000).toFixed(1);
      const what = children.length > 0 ? `: ${children.map((c) => `${c.label} (pid ${c.pid})`).join(', ')}` : '';
      process.stdout.write(`stopped the cluster of up pid ${rf.pid} (router ${rf.httpUrl || '-'}, control ${rf.controlUrl || '-'})${what} in ${secs} s\n`);
      if (killed) process.stdout.write(`up did not stop within ${o.timeout} ms: it was SIGKILLed\n`);
      if (orphans.length > 0) process.stdout.write(`SIGKILLed ${orphans.length} orphaned process(es): ${orphans.map((c) => c.pid).join(', ')}\n`);
    });
}
