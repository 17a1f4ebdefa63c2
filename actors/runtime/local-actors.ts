/**
 * The nact actors of one node, and their supervision. Each actor's nact state is its current
 * Handler, so a `reset` decision rebuilds it (nact re-runs initialStateFunc) while the queue is kept.
 *
 * The nact function hands each message to the handler and returns at once: a handler's promise
 * settles the reply later without holding the mailbox. A handler that throws (or rejects with)
 * anything but a MicroserveError has crashed: the query gets ACTOR_CRASHED and the crash goes
 * through nact's supervision (`onCrash`), never through the socket as an exception.
 *
 * Supervision (runtime/restart-policy.ts, one policy for the whole system): an actor that is
 * killed (`kill`, e.g. `microserve kill <path>`) or whose `onCrash` decides 'stop' is restarted
 * after the policy's backoff, its handler rebuilt (`reset`, else the handler it was spawned with).
 * While it is down it keeps its directory entry and its queue: messages that arrive wait and are
 * delivered, in order, once it is back (nact's `reset` semantics). After too many failures in the
 * window it stays `failed` (messages get GAVE_UP with the reason) until `restart`. `stop` is the
 * owner's deliberate, permanent stop and is never undone.
 */
import nact from 'nact';
import { MicroserveError, type WireError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import { CrashWindow } from './restart-policy.ts';
import type { ActorContext, ActorSupervision, ActorSystemApi, CrashDecision, Handler, SpawnOptions } from './types.ts';

type Reply = (body: unknown, error?: WireError) => void;
interface Envelope {
  msg?: unknown;
  from?: string;
  reply?: Reply;
  /** A crash from an async handler, re-thrown inside nact so supervision sees it. */
  crash?: unknown;
}

/** Messages kept for an actor that is down; more are refused with QUERY-level errors. */
const MAX_QUEUED = 100_000;

interface Entry {
  path: string;
  ref: any;
  /** Incarnation number: a message crash of an old incarnation must not touch the new one. */
  gen: number;
  isStopped: boolean;
  onStopped: () => void;
  handler: Handler;
  opts: SpawnOptions;
  sup: ActorSupervision;
  window: CrashWindow;
  /** Messages waiting while the actor is down. */
  queue: Envelope[];
  /** Messages handed to the current nact incarnation and not yet handled: a kill keeps them. */
  inbox: Envelope[];
  timer?: NodeJS.Timeout;
}

export class LocalActors {
  private readonly actors = new Map<string, Entry>();
  private readonly stoppedPaths = new Set<string>();
  private seq = 0;

  constructor(
    private readonly nactSystem: any,
    private readonly system: ActorSystemApi,
  ) {}

  /** Hosted here (running, restarting or failed). */
  has(path: string): boolean {
    const e = this.actors.get(path);
    return !!e && !e.isStopped;
  }

  /** Stopped here and not spawned again since: messages get ACTOR_STOPPED rather than a route. */
  wasStopped(path: string): boolean {
    return this.stoppedPaths.has(path) && !this.directoryHasElsewhere?.(path);
  }

  directoryHasElsewhere?: (path: string) => boolean;

  paths(): string[] {
    return [...this.actors.keys()];
  }

  spawn(path: string, handler: Handler, opts: SpawnOptions, onStopped: () => void): void {
    const entry: Entry = {
      path,
      ref: null,
      gen: 0,
      isStopped: false,
      onStopped,
      handler,
      opts,
      sup: { path, state: 'running', restarts: 0 },
      window: new CrashWindow(opts.restartPolicy),
      queue: [],
      inbox: [],
    };
    this.start(entry, handler);
    this.actors.set(path, entry);
    this.stoppedPaths.delete(path);
  }

  /** Supervision state of every actor hosted here. */
  supervision(): ActorSupervision[] {
    return [...this.actors.values()].map((e) => ({ ...e.sup, ...(e.sup.lastExit ? { lastExit: { ...e.sup.lastExit } } : {}) }));
  }

  deliver(path: string, msg: unknown, from: string, reply?: Reply): void {
    const e = this.actors.get(path);
    if (!e || e.isStopped) {
      const code = this.stoppedPaths.has(path) ? 'ACTOR_STOPPED' : 'ACTOR_NOT_FOUND';
      reply?.(undefined, { code, message: `no running actor at '${path}'` });
      return;
    }
    if (msg === null || typeof msg !== 'object') {
      reply?.(undefined, { code: 'BAD_MESSAGE', message: 'a message must be an object with a type' });
      return;
    }
    if (e.sup.state === 'failed') {
      reply?.(undefined, { code: 'GAVE_UP', message: `actor '${path}' failed: ${e.sup.failed}` });
      return;
    }
    if (e.sup.state === 'restarting') {
      if (e.queue.length >= MAX_QUEUED) reply?.(undefined, { code: 'ACTOR_STOPPED', message: `actor '${path}' is restarting and its queue is full` });
      else e.queue.push({ msg, from, reply });
      return;
    }
    this.dispatch(e, { msg, from, reply });
  }

  private dispatch(e: Entry, env: Envelope): void {
    e.inbox.push(env);
    nact.dispatch(e.ref, env);
  }

  /**
   * Stops the actor as a crash would (resilience testing): it comes back under the restart
   * policy. False when no actor is hosted here at `path`.
   */
  kill(path: string, why = 'killed'): boolean {
    const e = this.actors.get(path);
    if (!e || e.isStopped) return false;
    if (e.sup.state === 'running') this.halt(e);
    this.failed(e, why);
    return true;
  }

  /** Brings a failed, restarting or running actor back now, with a fresh crash window. */
  restart(path: string): boolean {
    const e = this.actors.get(path);
    if (!e || e.isStopped) return false;
    clearTimeout(e.timer);
    if (e.sup.state === 'running') this.halt(e);
    e.window.clear();
    delete e.sup.failed;
    this.revive(e);
    return true;
  }

  stop(path: string): void {
    const e = this.actors.get(path);
    if (!e) return;
    e.isStopped = true;
    clearTimeout(e.timer);
    if (e.sup.state === 'running') nact.stop(e.ref);
    for (const q of [...e.inbox.splice(0), ...e.queue.splice(0)]) q.reply?.(undefined, { code: 'ACTOR_STOPPED', message: `actor '${path}' was stopped` });
    this.actors.delete(path);
    this.stoppedPaths.add(path);
    e.onStopped();
  }

  stopAll(): void {
    for (const [, e] of this.actors) {
      e.isStopped = true;
      clearTimeout(e.timer);
      if (e.sup.state === 'running') nact.stop(e.ref);
    }
    this.actors.clear();
    try {
      nact.stop(this.nactSystem);
    } catch {
      /* already stopped */
    }
  }

  /** Stops the current nact incarnation; what it had not handled yet goes first in the queue. */
  private halt(e: Entry): void {
    nact.stop(e.ref);
    e.queue.unshift(...e.inbox.splice(0).filter((x) => !('crash' in x)));
  }

  /** The actor is down (killed, or a 'stop' decision): restart after the backoff, or give up. */
  private failed(e: Entry, why: string): void {
    const at = new Date().toISOString();
    e.sup.lastExit = { reason: why, at };
    const d = e.window.record(why);
    if (d.gaveUp !== undefined) {
      e.sup.state = 'failed';
      e.sup.failed = d.gaveUp;
      log.error('actor crash-loops: giving up until restarted', { path: e.path, why: d.gaveUp });
      for (const q of e.queue.splice(0)) q.reply?.(undefined, { code: 'GAVE_UP', message: `actor '${e.path}' failed: ${d.gaveUp}` });
      return;
    }
    e.sup.state = 'restarting';
    log.warn('actor down; restarting', { path: e.path, why, inMs: d.delayMs });
    clearTimeout(e.timer);
    e.timer = setTimeout(() => this.revive(e), d.delayMs);
  }

  private revive(e: Entry): void {
    if (e.isStopped) return;
    e.sup.restarts += 1;
    this.start(e, e.opts.reset ? e.opts.reset() : e.handler);
    e.sup.state = 'running';
    for (const q of e.queue.splice(0)) this.dispatch(e, q);
    log.info('actor restarted', { path: e.path, restarts: e.sup.restarts });
  }

  /** Spawns a new nact incarnation of the actor with `handler`. */
  private start(entry: Entry, handler: Handler): void {
    const { path, opts } = entry;
    const system = this.system;
    const gen = ++entry.gen;
    const isCurrent = () => entry.gen === gen && !entry.isStopped && entry.sup.state === 'running';
    const crashed = (err: unknown, reply?: Reply) => {
      reply?.(undefined, { code: 'ACTOR_CRASHED', message: `actor '${path}' crashed: ${(err as Error)?.message ?? String(err)}` });
    };
    const typedError = (err: unknown, reply?: Reply): boolean => {
      if (!(err instanceof MicroserveError)) return false;
      reply?.(undefined, err.toWire());
      return true;
    };
    const ref = nact.spawn(
      this.nactSystem,
      (state: Handler, env: Envelope) => {
        // a message a kill moved to the next incarnation's queue is not handled here
        if (entry.gen !== gen || entry.isStopped || entry.sup.state !== 'running') return state;
        const at = entry.inbox.indexOf(env);
        if (at >= 0) entry.inbox.splice(at, 1);
        if ('crash' in env) throw env.crash;
        const ctx: ActorContext = { self: path, from: env.from, system };
        let result: unknown;
        try {
          result = state(env.msg, ctx);
        } catch (e) {
          if (typedError(e, env.reply)) return state;
          crashed(e, env.reply);
          throw e;
        }
        if (result instanceof Promise) {
          result.then(
            (v) => env.reply?.(v),
            (e) => {
              if (typedError(e, env.reply)) return;
              crashed(e, env.reply);
              if (isCurrent()) nact.dispatch(ref, { crash: e } satisfies Envelope);
            },
          );
        } else {
          env.reply?.(result);
        }
        return state;
      },
      `${path.replace(/[^a-zA-Z0-9_-]/g, '_')}-${++this.seq}`,
      {
        initialStateFunc: () => (opts.reset && entry.ref ? opts.reset() : handler),
        onCrash: (msg: Envelope | undefined, err: unknown, ctx: any) => {
          let d: CrashDecision = 'resume';
          try {
            d = opts.onCrash ? opts.onCrash(err, msg?.msg) : 'resume';
          } catch (e) {
            log.error('onCrash policy threw; resuming', { path, error: e as Error });
          }
          log.warn('actor crashed', { path, decision: d, error: err as Error });
          if (d === 'stop') {
            if (isCurrent()) {
              entry.queue.unshift(...entry.inbox.splice(0).filter((x) => !('crash' in x)));
              this.failed(entry, `crashed: ${(err as Error)?.message ?? String(err)}`);
            }
            return ctx.stop;
          }
          return d === 'reset' ? ctx.reset : ctx.resume;
        },
      },
    );
    entry.ref = ref;
  }
}
