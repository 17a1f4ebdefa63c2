/**
 * The engine loop's host time around its forwards (`status` → `counters.host`, the router's
 * `/metrics` → `microserve_engine_host_*`). Owned by the engine core, which marks the loop's
 * points; nothing else writes the times.
 *
 * A step's gap runs from its forward's result to the next forward's submission within one busy
 * period: while the loop updates requests, schedules and builds the next batch, the backend (the
 * GPU) has nothing queued. DESIGN.md's serving bound assumes the gap is zero; the gap per step is
 * what serving loses to it.
 */
import type { HostTimes } from '../messages.ts';

/** The phases of the loop's own time (fields of HostTimes). */
export type HostPhase = 'scheduleMs' | 'buildMs' | 'updateMs' | 'sendMs';

export function newHostTimes(): HostTimes {
  return { numForwards: 0, numGaps: 0, gapMs: 0, forwardMs: 0, scheduleMs: 0, buildMs: 0, updateMs: 0, sendMs: 0 };
}

export class HostClock {
  private mark = 0;
  private submittedAt = 0;
  /** When the last forward's result reached the loop; null: no forward since the loop went idle. */
  private resultAt: number | null = null;

  constructor(readonly times: HostTimes) {}

  /** A phase starts now. */
  begin(): void {
    this.mark = performance.now();
  }

  /** The current phase ends now: its time goes to `phase`, and the next phase starts. */
  lap(phase: HostPhase): void {
    const t = performance.now();
    this.times[phase] += t - this.mark;
    this.mark = t;
  }

  /** A forward was submitted now (ends the gap since the previous result, if any). */
  submitted(): void {
    const t = performance.now();
    this.times.numForwards++;
    if (this.resultAt !== null) {
      this.times.numGaps++;
      this.times.gapMs += t - this.resultAt;
      this.resultAt = null;
    }
    this.submittedAt = t;
  }

  /** The forward's result reached the loop now (starts a gap). */
  resulted(): void {
    const t = performance.now();
    this.times.forwardMs += t - this.submittedAt;
    this.resultAt = t;
    this.mark = t;
  }

  /** The loop went idle: the time until the next forward is not a gap. */
  idle(): void {
    this.resultAt = null;
  }
}
