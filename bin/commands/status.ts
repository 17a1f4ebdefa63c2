import type { Command } from 'commander';
import { connect } from '../../actors/runtime/client.ts';
import { describePlan } from '../../actors/engine/plan.ts';
import type { ClusterStatus } from '../../supervisors/cluster.ts';

export function register(program: Command): void {
  program
    .command('status')
    .description('show every actor of the running cluster: path, kind, role, host, pid, restarts, state, and each engine\'s memory plan')
    .option('--json', 'one JSON object with an `actors` array')
    .option('--control <url>', 'control-plane ws URL (default: from the run file written by `up`)')
    .action(async (o: { json?: boolean; control?: string }) => {
      const c = await connect(o.control);
      try {
        const st = await c.ref('control').query<ClusterStatus>({ type: 'status' }, 10_000);
        if (o.json) {
          process.stdout.write(JSON.stringify(st) + '\n');
          return;
        }
        process.stdout.write(`topology v${st.topologyVersion} (${st.topologySource ?? 'inline'}), strategy ${st.strategy}\n`);
        const rows = st.actors.map((a) => [
          a.path, a.kind, a.role ?? '-', a.host, String(a.pid ?? '-'), String(a.restarts), a.state,
          a.queueDepth !== undefined ? String(a.queueDepth) : '',
          a.kv ? `${a.kv.total - a.kv.free}/${a.kv.total}` : '',
        ]);
        const head = ['PATH', 'KIND', 'ROLE', 'HOST', 'PID', 'RESTARTS', 'STATE', 'QUEUE', 'KV USED'];
        const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
        for (const r of [head, ...rows]) process.stdout.write(r.map((x, i) => x.padEnd(w[i])).join('  ').trimEnd() + '\n');
        for (const a of st.actors) if (a.plan) process.stdout.write(`${a.path} memory plan, ${describePlan(a.plan)}\n`);
        for (const a of st.actors) if (a.failed) process.stdout.write(`${a.path} failed: ${a.failed} (bring it back: microserve restart ${a.path})\n`);
        if (st.lastApply) process.stdout.write(`last apply: ${JSON.stringify(st.lastApply)}\n`);
      } finally {
        await c.close();
      }
    });
}
