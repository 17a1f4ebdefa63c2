/**
 * Incremental detokenizers (see StreamDecoder in tokenizer.ts).
 *
 * - ByteStreamDecoder: for byte-level tokenizers whose tokens map to raw bytes (Llama 3); a
 *   streaming TextDecoder holds back at most 3 bytes of an unfinished character. O(new bytes).
 * - WindowStreamDecoder: for any tokenizer with only `decode`: decodes a short window of recent
 *   ids and emits what it adds, holding back while the window ends in U+FFFD (an unfinished
 *   character). A UTF-8 character has at most 4 bytes and every token carries at least one, so
 *   a tail still broken after 4 held tokens is really invalid and is emitted as is.
 */
import type { StreamDecoder } from './tokenizer.ts';

/** Maps one token to its bytes, or to a string for a special token (null: skip it). */
export type TokenPiece = (id: number) => Uint8Array | string | null;

export class ByteStreamDecoder implements StreamDecoder {
  private utf8 = new TextDecoder('utf-8');
  private readonly piece: TokenPiece;

  constructor(piece: TokenPiece) {
    this.piece = piece;
  }

  push(ids: readonly number[]): string {
    let out = '';
    let bytes: number[] = [];
    for (const id of ids) {
      const p = this.piece(id);
      if (p === null) continue;
      if (typeof p === 'string') {
        // a special token ends any unfinished character before it (as a whole decode would)
        out += this.utf8.decode(Uint8Array.from(bytes), { stream: true }) + this.utf8.decode() + p;
        bytes = [];
        continue;
      }
      for (const b of p) bytes.push(b);
    }
    return out + this.utf8.decode(Uint8Array.from(bytes), { stream: true });
  }

  flush(): string {
    const rest = this.utf8.decode();
    this.utf8 = new TextDecoder('utf-8');
    return rest;
  }
}

const MAX_HELD_TOKENS = 4;

export class WindowStreamDecoder implements StreamDecoder {
  private ids: number[] = [];
  /** ids[prefix, read) were emitted already and give the next window its left context. */
  private prefix = 0;
  private read = 0;
  private readonly decode: (ids: number[]) => string;

  constructor(decode: (ids: number[]) => string) {
    this.decode = decode;
  }

  push(ids: readonly number[]): string {
    let out = '';
    for (const id of ids) {
      this.ids.push(id);
      out += this.step(false);
    }
    return out;
  }

  flush(): string {
    const out = this.step(true);
    this.ids = [];
    this.prefix = this.read = 0;
    return out;
  }

  private step(isFinal: boolean): string {
    if (this.read === this.ids.length) return '';
    const before = this.decode(this.ids.slice(this.prefix, this.read));
    const after = this.decode(this.ids.slice(this.prefix));
    const isHeld = after.endsWith('\uFFFD') && this.ids.length - this.read < MAX_HELD_TOKENS;
    if (!isFinal && (isHeld || after.length < before.length)) return '';
    // a decoder may rewrite the left context (space clean-up); emit only what follows it
    const text = after.startsWith(before) ? after.slice(before.length) : after.slice(commonPrefix(before, after));
    this.prefix = this.read;
    this.read = this.ids.length;
    // keep the window short: old ids never change the text of new ones beyond a few tokens
    if (this.prefix > 64) {
      this.ids = this.ids.slice(this.prefix);
      this.read -= this.prefix;
      this.prefix = 0;
    }
    return text;
  }
}

function commonPrefix(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}
