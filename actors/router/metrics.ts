/**
 * Prometheus metrics of the router (`GET /metrics`), on a registry of its own. Request metrics
 * are recorded as requests run; engine gauges are filled from the engines' last status when
 * scraped.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { LoopDelayStats, LoopMonitor } from '../../common/loop-monitor.ts';
import type { EnginePool } from './engine-pool.ts';

const P = 'microserve_';

export class RouterMetrics {
  readonly registry = new Registry();
  readonly ttft = new Histogram({
    name: `${P}time_to_first_token_seconds`,
    help: 'Time from request arrival to its first generated token',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly tpot = new Histogram({
    name: `${P}time_per_output_token_seconds`,
    help: 'Mean time between generated tokens of a request, after the first',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.5],
    registers: [this.registry],
  });
  readonly e2e = new Histogram({
    name: `${P}e2e_request_latency_seconds`,
    help: 'Time from request arrival to its last token',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320],
    registers: [this.registry],
  });
  readonly requests = new Counter({
    name: `${P}requests_total`,
    help: 'Requests finished, by finish reason (stop, length, abort, error)',
    labelNames: ['finish'],
    registers: [this.registry],
  });
  readonly httpErrors = new Counter({
    name: `${P}http_errors_total`,
    help: 'Requests refused with an HTTP error, by status',
    labelNames: ['status'],
    registers: [this.registry],
  });
  readonly promptTokens = new Counter({ name: `${P}prompt_tokens_total`, help: 'Prompt tokens of finished requests', registers: [this.registry] });
  readonly generationTokens = new Counter({ name: `${P}generation_tokens_total`, help: 'Tokens generated and streamed', registers: [this.registry] });
  readonly migrations = new Counter({
    name: `${P}request_migrations_total`,
    help: 'Requests resumed on another engine after theirs failed, by reason',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly opFailures = new Counter({
    name: `${P}engine_op_failures_total`,
    help: 'Failed engine operations (prep_recv, remote_send, start_generate) by error code',
    labelNames: ['op', 'code'],
    registers: [this.registry],
  });
  readonly queueTime = new Histogram({
    name: `${P}request_queue_time_seconds`,
    help: 'Time from request arrival to an engine accepting it (router queue: waiting for an engine, KV admission retries)',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly queued = new Gauge({ name: `${P}router_requests_queued`, help: 'Requests in flight without a first token yet (what router.maxQueue bounds)', registers: [this.registry] });
  readonly busyRetries = new Counter({
    name: `${P}request_busy_retries_total`,
    help: 'Strategy runs refused with KV_PAGES_EXHAUSTED and retried after a backoff (not counted as failed attempts)',
    registers: [this.registry],
  });
  readonly stepFailed = new Counter({ name: `${P}requests_step_failed_total`, help: 'Requests ended by a failed engine step (STEP_FAILED)', registers: [this.registry] });
  readonly tokensDiscarded = new Counter({
    name: `${P}router_tokens_discarded_total`,
    help: 'Tokens engines generated that no client got (a stale attempt, a cancelled request, beyond max tokens); engines generated = delivered (generation_tokens_total) + discarded',
    registers: [this.registry],
  });
  readonly migrationRecomputed = new Counter({
    name: `${P}migration_recomputed_tokens_total`,
    help: 'Context tokens (prompt + tokens streamed) migrated requests resumed with: KV the next engine computes again, less its prefix-cache hits',
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({ name: `${P}router_requests_running`, help: 'Requests the router is serving', registers: [this.registry] });
  readonly waiting = new Gauge({ name: `${P}router_requests_waiting`, help: 'Requests waiting for an engine to come up', registers: [this.registry] });
  readonly planVersion = new Gauge({ name: `${P}plan_version`, help: 'Version of the plan in force', registers: [this.registry] });
  readonly planSwitch = new Gauge({ name: `${P}plan_switch_seconds`, help: 'Time the last plan change took to come into force', registers: [this.registry] });

  /** `loop`: the event-loop monitor of the router's own process (`up`), shown next to the engines'. */
  constructor(pool: EnginePool, loop?: LoopMonitor) {
    const r = [this.registry];
    const running = new Gauge({ name: `${P}engine_requests_running`, help: 'Running requests per engine (engine status)', labelNames: ['engine'], registers: r });
    const queued = new Gauge({ name: `${P}engine_requests_waiting`, help: 'Queued requests per engine (engine status)', labelNames: ['engine'], registers: r });
    const reserved = new Gauge({ name: `${P}engine_reservations`, help: 'Parked prep_recv reservations per engine', labelNames: ['engine'], registers: r });
    const pages = new Gauge({ name: `${P}kv_pages`, help: 'KV pages per engine by state (free, cached, in_use, reserved, total)', labelNames: ['engine', 'state'], registers: r });
    const up = new Gauge({ name: `${P}engine_up`, help: '1 when the engine answers status', labelNames: ['engine', 'role'], registers: r });
    const load = new Gauge({ name: `${P}engine_load`, help: 'Load the router routes by (live requests + reported extra)', labelNames: ['engine'], registers: r });
    const restarts = new Gauge({ name: `${P}engine_restarts`, help: 'Engine process restarts the router observed', labelNames: ['engine'], registers: r });
    const transfers = new Gauge({ name: `${P}engine_kv_transfers`, help: 'KV transfers an engine made, by transport (cumulative, engine status)', labelNames: ['engine', 'transport'], registers: r });
    const tokens = new Gauge({
      name: `${P}engine_tokens`,
      help: 'Tokens per engine by kind (cumulative, engine status); recomputed: prefill tokens computed again after a preemption',
      labelNames: ['engine', 'kind'],
      registers: r,
    });
    const preemptions = new Gauge({ name: `${P}engine_preemptions`, help: 'Running requests preempted for KV pages (cumulative, engine status)', labelNames: ['engine'], registers: r });
    const stepFailures = new Gauge({ name: `${P}engine_step_failures`, help: 'Forward steps that failed, retries included (cumulative, engine status)', labelNames: ['engine'], registers: r });
    const kvTokens = new Gauge({ name: `${P}engine_kv_capacity_tokens`, help: 'KV pool capacity in tokens (pages x page size)', labelNames: ['engine'], registers: r });
    const gapSum = new Gauge({
      name: `${P}engine_host_gap_seconds_sum`,
      help: "Time the backend sat idle between an engine's forwards while its loop prepared the next (cumulative, engine status; per step: divide by _count)",
      labelNames: ['engine'],
      registers: r,
    });
    const gapCount = new Gauge({ name: `${P}engine_host_gap_seconds_count`, help: 'Gaps measured: forwards that followed another without the engine loop going idle (cumulative)', labelNames: ['engine'], registers: r });
    const forwardSum = new Gauge({ name: `${P}engine_forward_seconds_sum`, help: 'Forward time, submission to result (cumulative, engine status)', labelNames: ['engine'], registers: r });
    const forwardCount = new Gauge({ name: `${P}engine_forward_seconds_count`, help: 'Forwards submitted (cumulative, engine status)', labelNames: ['engine'], registers: r });
    const phaseSum = new Gauge({
      name: `${P}engine_host_phase_seconds_sum`,
      help: "Engine loop host time by phase (schedule, build, update, send; cumulative): in the gap or, with overlap, while the next forward runs",
      labelNames: ['engine', 'phase'],
      registers: r,
    });
    const hostGauges = [gapSum, gapCount, forwardSum, forwardCount, phaseSum];
    const loopGauges = {
      max: new Gauge({ name: `${P}event_loop_delay_max_seconds`, help: 'Longest event-loop delay of a process since it started (the router\'s, and each engine\'s from its status)', labelNames: ['process'], registers: r }),
      p99: new Gauge({ name: `${P}event_loop_delay_p99_seconds`, help: '99th percentile of event-loop delay samples of a process since it started', labelNames: ['process'], registers: r }),
      blocks: new Gauge({ name: `${P}event_loop_blocks`, help: 'Single event-loop blocks longer than the warning threshold (250 ms) since the process started (cumulative)', labelNames: ['process'], registers: r }),
      blockMax: new Gauge({ name: `${P}event_loop_block_max_seconds`, help: 'Longest single event-loop block a process saw since it started', labelNames: ['process'], registers: r }),
    };
    const setLoop = (s: LoopDelayStats) => {
      const process = s.role;
      loopGauges.max.set({ process }, s.maxMs / 1e3);
      loopGauges.p99.set({ process }, s.p99Ms / 1e3);
      loopGauges.blocks.set({ process }, s.numBlocks);
      loopGauges.blockMax.set({ process }, s.maxBlockMs / 1e3);
    };
    this.fill = () => {
      for (const m of [running, queued, reserved, pages, up, load, restarts, transfers, tokens, preemptions, stepFailures, kvTokens, ...hostGauges, ...Object.values(loopGauges)]) m.reset();
      if (loop) setLoop(loop.stats());
      for (const v of pool.views()) {
        up.set({ engine: v.name, role: v.role }, v.isAlive ? 1 : 0);
        load.set({ engine: v.name }, v.load);
        restarts.set({ engine: v.name }, v.restarts);
        const st = v.status;
        if (!st) continue;
        if (st.eventLoop) setLoop(st.eventLoop);
        running.set({ engine: v.name }, st.numRunning);
        queued.set({ engine: v.name }, st.numWaiting);
        reserved.set({ engine: v.name }, st.numReserved);
        for (const [state, n] of [['free', st.kv.free], ['cached', st.kv.cached], ['in_use', st.kv.inUse], ['reserved', st.kv.reserved], ['total', st.kv.total]] as const) {
          pages.set({ engine: v.name, state }, n);
        }
        for (const [transport, n] of Object.entries(st.counters?.transfers ?? {})) transfers.set({ engine: v.name, transport }, n);
        if (st.pageSize) kvTokens.set({ engine: v.name }, st.kv.total * st.pageSize);
        const c = st.counters;
        if (c) {
          const kinds = [
            ['prefilled', c.tokensPrefilled],
            ['generated', c.tokensGenerated],
            ['sent', c.tokensSent],
            ['received', c.tokensReceived],
            ['prefix_hit', c.prefixHitTokens],
            ['recomputed', c.tokensRecomputed ?? 0],
          ] as const;
          for (const [kind, n] of kinds) tokens.set({ engine: v.name, kind }, n);
          preemptions.set({ engine: v.name }, c.preemptions);
          stepFailures.set({ engine: v.name }, c.stepFailures ?? 0);
          const h = c.host;
          if (h) {
            gapSum.set({ engine: v.name }, h.gapMs / 1e3);
            gapCount.set({ engine: v.name }, h.numGaps);
            forwardSum.set({ engine: v.name }, h.forwardMs / 1e3);
            forwardCount.set({ engine: v.name }, h.numForwards);
            for (const [phase, ms] of [['schedule', h.scheduleMs], ['build', h.buildMs], ['update', h.updateMs], ['send', h.sendMs]] as const) phaseSum.set({ engine: v.name, phase }, ms / 1e3);
          }
        }
      }
    };
  }

  /** Refreshes the engine gauges from the engines' last status. */
  private readonly fill: () => void;

  text(): Promise<string> {
    this.fill();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
