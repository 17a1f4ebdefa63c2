/**
 * Wire frames between nodes: one msgpack map per ws binary message. Binary fields
 * (Uint8Array) travel as msgpack bin, never base64. Unpacked binaries are views into the
 * received frame: copy before keeping them past the handler.
 */
import { Packr } from 'msgpackr';
import type { WireError } from '../../common/errors.ts';

/** Directory entry: an actor path and the node that hosts it. */
export type DirEntry = [path: string, nodeId: string, url: string | null];

export type Frame =
  /** First frame on every connection, from the side that opened it. */
  | { k: 'hello'; nodeId: string; url: string | null; paths: string[]; join: boolean }
  /** Control's answer to hello: the whole directory. */
  | { k: 'welcome'; nodeId: string; directory: DirEntry[] }
  /** A node (un)registers its actors with control. */
  | { k: 'reg'; add?: DirEntry[]; remove?: string[] }
  /** Control broadcasts directory changes. */
  | { k: 'dir'; add?: DirEntry[]; remove?: string[]; goneNodes?: string[] }
  /** An actor message; `id` set when it is a query (the reply goes to `from`). */
  | { k: 'env'; to: string; from: string; id?: number; type: string; body: unknown }
  /** A query's reply, addressed to the querying node's path `node/<id>`. */
  | { k: 'reply'; to: string; id: number; body?: unknown; error?: WireError };

const packr = new Packr({ useRecords: false, moreTypes: false, structuredClone: false });

export function encodeFrame(f: Frame): Buffer {
  return packr.pack(f);
}

/** Decodes and shape-checks a frame; throws on anything malformed. */
export function decodeFrame(data: Buffer): Frame {
  const f = packr.unpack(data) as any;
  if (f === null || typeof f !== 'object' || typeof f.k !== 'string') throw new Error('frame is not a map with a kind');
  switch (f.k) {
    case 'hello':
      if (typeof f.nodeId !== 'string' || !Array.isArray(f.paths)) throw new Error('bad hello');
      return f;
    case 'welcome':
    case 'reg':
    case 'dir':
      return f;
    case 'env':
      if (typeof f.to !== 'string' || typeof f.from !== 'string' || typeof f.type !== 'string') throw new Error('bad envelope');
      if (f.id !== undefined && typeof f.id !== 'number') throw new Error('bad envelope id');
      if (f.body === null || typeof f.body !== 'object') throw new Error('envelope body is not a map');
      return f;
    case 'reply':
      if (typeof f.to !== 'string' || typeof f.id !== 'number') throw new Error('bad reply');
      return f;
    default:
      throw new Error(`unknown frame kind ${String(f.k).slice(0, 32)}`);
  }
}

/** ws close codes used by the runtime. */
export const CLOSE = {
  /** ws's own code for a message over maxPayload. */
  TOO_LARGE: 1009,
  BAD_FRAME: 4400,
  HEARTBEAT: 4408,
  SHUTDOWN: 1001,
} as const;
