/**
 * The event-loop delay monitor of a process that hosts actors (`up`, an agent, an engine
 * process). Peers declare a connection dead after `deadAfterMs` of silence
 * (actors/runtime/connection.ts), so a loop blocked for seconds looks like a dead process: this
 * makes such blocks visible where they happen.
 *
 * Two cheap parts: `perf_hooks.monitorEventLoopDelay` (a libuv timer, ~20 ms resolution) for the
 * delay distribution, and a drift probe (one unref'd timer every `probeMs`) that sees each single
 * block as it ends and logs a warning with the process role when it passed `warnMs`. Both
 * count from the monitor's start; nothing here allocates per tick.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { log } from './log.ts';

/** What a monitor has seen since it started (milliseconds). */
export interface LoopDelayStats {
  /** The process role (`up`, `agent-<host>`, `engine-<name>`...). */
  role: string;
  /** Longest event-loop delay seen (histogram). */
  maxMs: number;
  /** 99th percentile of the delay samples. */
  p99Ms: number;
  /** Mean of the delay samples. */
  meanMs: number;
  /** Blocks longer than `warnMs` the probe saw (each one also logged as a warning). */
  numBlocks: number;
  /** Longest single block the probe saw. */
  maxBlockMs: number;
  /** The threshold of `numBlocks`. */
  warnMs: number;
}

export interface LoopMonitorOptions {
  /** [warnMs=250] a single block longer than this is logged and counted. */
  warnMs?: number;
  /** [probeMs=100] period of the drift probe; a block is seen to within this. */
  probeMs?: number;
  /** [resolutionMs=20] sampling period of the delay histogram. */
  resolutionMs?: number;
  /** Called for each block over `warnMs` (tests); after the warning. */
  onBlock?: (ms: number) => void;
}

export class LoopMonitor {
  readonly warnMs: number;
  private readonly hist: IntervalHistogram;
  private readonly timer: NodeJS.Timeout;
  private last = performance.now();
  private numBlocks = 0;
  private maxBlockMs = 0;

  constructor(
    readonly role: string,
    opts: LoopMonitorOptions = {},
  ) {
    this.warnMs = opts.warnMs ?? 250;
    const probeMs = opts.probeMs ?? 100;
    if (!(this.warnMs > 0) || !(probeMs > 0)) throw new TypeError('LoopMonitor: warnMs and probeMs must be positive');
    this.hist = monitorEventLoopDelay({ resolution: opts.resolutionMs ?? 20 });
    this.hist.enable();
    this.timer = setInterval(() => {
      const now = performance.now();
      const blockMs = now - this.last - probeMs;
      this.last = now;
      if (blockMs <= this.warnMs) return;
      this.numBlocks++;
      this.maxBlockMs = Math.max(this.maxBlockMs, blockMs);
      log.warn('event loop blocked', { role: this.role, ms: Math.round(blockMs) });
      opts.onBlock?.(blockMs);
    }, probeMs);
    this.timer.unref();
  }

  stats(): LoopDelayStats {
    const ns = 1e6;
    const n = this.hist.count;
    return {
      role: this.role,
      maxMs: n > 0 ? this.hist.max / ns : 0,
      p99Ms: n > 0 ? this.hist.percentile(99) / ns : 0,
      meanMs: n > 0 ? this.hist.mean / ns : 0,
      numBlocks: this.numBlocks,
      maxBlockMs: this.maxBlockMs,
      warnMs: this.warnMs,
    };
  }

  stop(): void {
    clearInterval(this.timer);
    this.hist.disable();
  }
}
