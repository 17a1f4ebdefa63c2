/**
 * Generated token ids → the text a client sees: incremental detokenization, and stop strings
 * (generation ends before the first occurrence of any of them; the stop string is not shown).
 * While streaming, text that could be the start of a stop string is held back until it is
 * known not to be one.
 */
import type { StreamDecoder } from '../../text/tokenizer.ts';

export class TextOutput {
  private held = '';
  private isStopped = false;
  private full = '';
  /** The stop string that ended the text, if one did. */
  matchedStop: string | null = null;

  /**
   * `decoder` null: the model has no tokenizer, the text stays empty. [includeStop=false] keep the
   * stop string at the end of the text (vLLM's include_stop_str_in_output).
   */
  constructor(
    private readonly decoder: StreamDecoder | null,
    private readonly stops: string[],
    private readonly includeStop = false,
  ) {}

  get stopped(): boolean {
    return this.isStopped;
  }

  /** All text emitted so far. */
  get text(): string {
    return this.full;
  }

  /** Text to emit for these new tokens ('' while held back or after a stop). */
  push(ids: readonly number[]): string {
    if (this.isStopped || !this.decoder) return '';
    return this.emit(this.held + this.decoder.push(ids), false);
  }

  /** At the end of generation: whatever was held back. */
  finish(): string {
    if (this.isStopped || !this.decoder) return '';
    return this.emit(this.held + this.decoder.flush(), true);
  }

  private emit(s: string, isFinal: boolean): string {
    let cut = -1;
    for (const stop of this.stops) {
      const i = s.indexOf(stop);
      if (i >= 0 && (cut < 0 || i < cut)) (cut = i), (this.matchedStop = stop);
    }
    let out: string;
    if (cut >= 0) {
      this.isStopped = true;
      out = s.slice(0, cut + (this.includeStop ? this.matchedStop!.length : 0));
      this.held = '';
    } else {
      const keep = isFinal ? 0 : this.partialStopSuffix(s);
      out = s.slice(0, s.length - keep);
      this.held = s.slice(s.length - keep);
    }
    this.full += out;
    return out;
  }

  /** Length of the longest suffix of `s` that is a proper prefix of a stop string. */
  private partialStopSuffix(s: string): number {
    let best = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, s.length); k > best; k--) {
        if (s.endsWith(stop.slice(0, k))) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}
