/** Shared pieces of the engine tests: the real fixture model, a token collector, engine pairs. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { EngineCore } from '../../actors/engine/engine-core.ts';
import type { KvTransport } from '../../actors/engine/kv-transfer/transport.ts';
import type { EngineCoreOptions } from '../../actors/engine/types.ts';
import type { FinishReason, SamplingParams, TokenLogprob, TokensItem } from '../../actors/messages.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';

export const FIXTURE = fileURLToPath(new URL('../fixtures/tiny-llama-a', import.meta.url));

export interface RefCase {
  prompt_ids: number[];
  greedy_ids: number[];
}

export const CASES: RefCase[] = JSON.parse(readFileSync(`${FIXTURE}/reference.json`, 'utf8')).cases;

export function greedy(maxTokens: number, extra: Partial<SamplingParams> = {}): SamplingParams {
  return { maxTokens, temperature: 0, topP: 1, stopTokenIds: [], ...extra };
}

export function openFixture(numPages = 64, pageSize = 16): Promise<LoadedModel> {
  return openModel(FIXTURE, { numPages, pageSize, numThreads: 2 });
}

export interface Stream {
  tokens: number[];
  /** Logprobs of each token, when the request asked for them. */
  logprobs: TokenLogprob[];
  finish: FinishReason | null;
  error?: { code: string; message: string };
  done: Promise<Stream>;
}

/**
 * Collects every request's token stream and checks the stream contract as it goes: nothing after
 * `finish`, `finish` exactly once. Violations are recorded in `problems` (tests assert it empty).
 */
export class Collector {
  readonly streams = new Map<string, Stream & { resolve: (s: Stream) => void }>();
  readonly problems: string[] = [];

  readonly sink = (_replyTo: string, items: TokensItem[]) => {
    for (const msg of items) {
      const s = this.get(msg.id);
      if (s.finish) this.problems.push(`${msg.id}: message after finish`);
      s.tokens.push(...msg.tokens);
      for (const lp of msg.logprobs ?? []) s.logprobs.push(lp);
      if (msg.finish) {
        s.finish = msg.finish;
        s.error = msg.error;
        s.resolve(s);
      }
    }
  };

  get(id: string): Stream & { resolve: (s: Stream) => void } {
    let s = this.streams.get(id);
    if (!s) {
      let resolve!: (s: Stream) => void;
      const done = new Promise<Stream>((r) => (resolve = r));
      s = { tokens: [], logprobs: [], finish: null, done, resolve };
      this.streams.set(id, s);
    }
    return s;
  }

  done(id: string): Promise<Stream> {
    return this.get(id).done;
  }
}

export function makeCore(loaded: LoadedModel, opts: Partial<EngineCoreOptions> & { collector: Collector }): EngineCore {
  return new EngineCore({ name: 'e0', backend: loaded.backend, model: loaded.name, sink: opts.collector.sink, ...opts });
}

/** Greedy (or given sampling) generation of one prompt on `core`; resolves with the stream. */
export async function run(core: EngineCore, c: Collector, id: string, promptIds: number[], sampling: SamplingParams): Promise<Stream> {
  core.generate({ id, promptIds, sampling, replyTo: 'test' });
  return c.done(id);
}

/** In-process transport: kv_write straight into the receiver core (stands in for the ws hop). */
export function directTransport(receiver: () => EngineCore, tamper?: (pageIds: number[], data: Uint8Array) => Uint8Array): KvTransport {
  return {
    name: 'host',
    maxChunkBytes: 4 * 1024 * 1024,
    async write(id, pageIds, data) {
      const bytes = tamper ? tamper(pageIds, data) : data;
      await receiver().kvWrite({ id, pageIds, data: bytes });
    },
  };
}

/** Pages held by requests and reservations (cached pages are free to take). */
export function usedPages(core: EngineCore): number {
  const s = core.kv.stats();
  return s.inUse + s.reserved;
}
