/**
 * The one supervision policy of microserve, used for actors (runtime/actor-supervisor.ts) and
 * for OS processes (supervisors/node-supervisor.ts) alike:
 *   - a part that crashes or is killed is restarted after a backoff: `backoffMs` for the first
 *     failure in the window, doubled for each further one, capped at `maxBackoffMs`;
 *   - after more than `maxRestarts` failures within `windowMs` it is not restarted any more: its
 *     state is `failed` with the reason, until `restart` (the CLI's `microserve restart <path>`,
 *     or an apply that starts it again) clears the window and starts it at once.
 */

export interface RestartPolicy {
  /** [maxRestarts=5] failures within windowMs after which the part is left `failed`. */
  maxRestarts: number;
  /** [windowMs=60000] */
  windowMs: number;
  /** [backoffMs=250] delay before the first restart in the window. */
  backoffMs: number;
  /** [maxBackoffMs=5000] cap of the doubled delay. */
  maxBackoffMs: number;
}

export const DEFAULT_RESTART_POLICY: Readonly<RestartPolicy> = Object.freeze({ maxRestarts: 5, windowMs: 60_000, backoffMs: 250, maxBackoffMs: 5000 });

/** What to do after a failure: restart after `delayMs`, or give up (`gaveUp` says why). */
export type RestartDecision = { delayMs: number; gaveUp?: undefined } | { delayMs?: undefined; gaveUp: string };

/** The failures of one part within the policy's window. */
export class CrashWindow {
  private times: number[] = [];
  readonly policy: RestartPolicy;

  constructor(policy: Partial<RestartPolicy> = {}) {
    this.policy = { ...DEFAULT_RESTART_POLICY, ...policy };
  }

  /** Records a failure (`why`: exit code, signal, 'killed'...) and decides. */
  record(why: string, now = Date.now()): RestartDecision {
    const p = this.policy;
    this.times = this.times.filter((t) => now - t < p.windowMs);
    this.times.push(now);
    if (this.times.length > p.maxRestarts) return { gaveUp: `${this.times.length} failures within ${p.windowMs} ms (last: ${why})` };
    return { delayMs: Math.min(p.backoffMs * 2 ** (this.times.length - 1), p.maxBackoffMs) };
  }

  /** Forgets past failures (a manual restart, a fixed cause). */
  clear(): void {
    this.times = [];
  }
}
