/**
 * One request's grammar state: an xgrammar matcher fed every token the request samples, and the
 * mask of the tokens allowed next (`Request.allowedMask`, applied by the backend before any other
 * logit processing). Rebuilt from tokens: `open` replays the output so far, so a request that
 * moves to another engine (migration) continues where it was.
 *
 * Complete: the grammar accepts nothing more but a stop token (or has taken one); the engine ends
 * the request with `stop` there.
 */
import { MicroserveError } from '../../../common/errors.ts';
import type { GrammarMatcher } from '../../text/xgrammar.ts';
import type { CompiledEntry } from './compiler.ts';

export class RequestGrammar {
  /** Tokens allowed for the next draw: bit i of word i >> 5 (ceil(vocab / 32) words). */
  mask: Uint32Array = new Uint32Array(0);
  /** Nothing but a stop token can follow (or one was taken). */
  isComplete = false;
  private isDisposed = false;

  private constructor(
    private readonly matcher: GrammarMatcher,
    private readonly stopTokenIds: readonly number[],
  ) {}

  /** A matcher on `entry` with `replay` accepted, and the mask after them. BAD_GRAMMAR naming `field` if a replayed token breaks the grammar. */
  static async open(entry: CompiledEntry, stopTokenIds: readonly number[], replay: readonly number[], field: string): Promise<RequestGrammar> {
    const matcher = await entry.inst.call(field, (lib) => lib.GrammarMatcher.createGrammarMatcher(entry.compiled));
    const g = new RequestGrammar(matcher, stopTokenIds);
    for (let i = 0; i < replay.length; i++) {
      if (!g.accept(replay[i])) {
        g.dispose();
        throw new MicroserveError('BAD_GRAMMAR', `${field}: output token ${i} (${replay[i]}) of the earlier attempt is outside the grammar`, { field });
      }
    }
    await g.next();
    return g;
  }

  /** Feeds a sampled token; false when the grammar does not allow it (the mask was not applied). */
  accept(token: number): boolean {
    return this.matcher.acceptToken(token);
  }

  /** The matcher has taken a stop token (or ended): complete without a mask. */
  get isTerminated(): boolean {
    return this.matcher.isTerminated();
  }

  /** Computes the mask of the next draw and whether the output is complete. */
  async next(): Promise<void> {
    if (this.matcher.isTerminated()) {
      this.isComplete = true;
      return;
    }
    const m = await this.matcher.getNextTokenBitmask();
    this.mask = new Uint32Array(m.buffer, m.byteOffset, m.length);
    this.isComplete = onlyStops(this.mask, this.stopTokenIds);
  }

  /** Frees the matcher's WASM memory (idempotent). */
  dispose(): void {
    if (this.isDisposed) return;
    this.isDisposed = true;
    this.matcher.dispose();
  }
}

/** True when no token outside `stops` is allowed by `mask`. */
function onlyStops(mask: Uint32Array, stops: readonly number[]): boolean {
  for (let i = 0; i < mask.length; i++) {
    if (mask[i] === 0) continue;
    let w = mask[i];
    for (const t of stops) if (t >> 5 === i) w &= ~(1 << (t & 31));
    if (w !== 0) return false;
  }
  return true;
}
