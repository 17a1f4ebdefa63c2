/**
 * The nact actors of one node. Each actor's nact state is its current Handler, so a `reset`
 * decision rebuilds it (nact re-runs initialStateFunc) while the queue is kept.
 *
 * The nact function hands each message to the handler and returns at once: a handler's promise
 * settles the reply later without holding the mailbox. A handler that throws (or rejects with)
 * anything but a MicroserveError has crashed: the query gets ACTOR_CRASHED and the crash goes
 * through nact's supervision (`onCrash`), never through the socket as an exception.
 */
import nact from 'nact';
import { MicroserveError, type WireError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import type { ActorContext, ActorSystemApi, CrashDecision, Handler, SpawnOptions } from './types.ts';

type Reply = (body: unknown, error?: WireError) => void;
interface Envelope {
  msg?: unknown;
  from?: string;
  reply?: Reply;
  /** A crash from an async handler, re-thrown inside nact so supervision sees it. */
  crash?: unknown;
}

interface Entry {
  ref: any;
  isStopped: boolean;
  onStopped: () => void;
}

export class LocalActors {
  private readonly actors = new Map<string, Entry>();
  private readonly stoppedPaths = new Set<string>();

  constructor(
    private readonly nactSystem: any,
    private readonly system: ActorSystemApi,
  ) {}

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
    const system = this.system;
    const entry: Entry = { ref: null, isStopped: false, onStopped };
    const name = path.replace(/[^a-zA-Z0-9_-]/g, '_');
    const crashed = (err: unknown, reply?: Reply) => {
      reply?.(undefined, { code: 'ACTOR_CRASHED', message: `actor '${path}' crashed: ${(err as Error)?.message ?? String(err)}` });
    };
    const typedError = (err: unknown, reply?: Reply): boolean => {
      if (!(err instanceof MicroserveError)) return false;
      reply?.(undefined, err.toWire());
      return true;
    };
    entry.ref = nact.spawn(
      this.nactSystem,
      (state: Handler, env: Envelope) => {
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
              if (!entry.isStopped) nact.dispatch(entry.ref, { crash: e });
            },
          );
        } else {
          env.reply?.(result);
        }
        return state;
      },
      name,
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
            entry.isStopped = true;
            this.actors.delete(path);
            this.stoppedPaths.add(path);
            onStopped();
            return ctx.stop;
          }
          return d === 'reset' ? ctx.reset : ctx.resume;
        },
      },
    );
    this.actors.set(path, entry);
    this.stoppedPaths.delete(path);
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
    nact.dispatch(e.ref, { msg, from, reply } satisfies Envelope);
  }

  stop(path: string): void {
    const e = this.actors.get(path);
    if (!e) return;
    e.isStopped = true;
    nact.stop(e.ref);
    this.actors.delete(path);
    this.stoppedPaths.add(path);
    e.onStopped();
  }

  stopAll(): void {
    for (const [, e] of this.actors) {
      e.isStopped = true;
      nact.stop(e.ref);
    }
    this.actors.clear();
    try {
      nact.stop(this.nactSystem);
    } catch {
      /* already stopped */
    }
  }
}
