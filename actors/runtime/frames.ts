/**
 * Wire frames between nodes: one msgpack map per ws binary message. Binary fields
 * (Uint8Array) travel as msgpack bin, never base64. Unpacked binaries are views into the
 * received frame: copy before keeping them past the handler.
 *
 * One zod schema per frame kind (below) gives the type and the check: `decodeFrame` runs it on
 * every frame before any use, and a frame that fails is a `BAD_FRAME` MicroserveError naming the
 * field (`dir.add`, `env.id`...). Which frame may come when (hello first, dir only from control...)
 * is `frame-rules.ts`'s business.
 */
import { Packr } from 'msgpackr';
import { z } from 'zod';
import { MicroserveError } from '../../common/errors.ts';

/** [MAX_LIST=65536] entries in one frame's list (directory, paths, removals). */
export const MAX_LIST = 65536;

/** Node ids and actor paths: what `ActorSystem` accepts for them. */
const NodeIdSchema = z.string().regex(/^[a-zA-Z0-9_.-]{1,128}$/);
const PathSchema = z.string().regex(/^[a-z]+(\/[a-zA-Z0-9_.-]{1,128})?$/);
const UrlSchema = z.string().max(2048).nullable();
const list = <T extends z.ZodType>(item: T) => z.array(item).max(MAX_LIST);

/** Directory entry: an actor path and the node that hosts it. */
export const DirEntrySchema = z.tuple([PathSchema, NodeIdSchema, UrlSchema]);
export type DirEntry = [path: string, nodeId: string, url: string | null];

const WireErrorSchema = z.object({ code: z.string().max(64), message: z.string().max(65536) });
/** An actor message: a map (its `type` is checked by the receiving actor's schema). */
const BodySchema = z.custom<object>((v) => v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array), 'a message must be a map');
/** Query ids are positive integers that fit a double exactly. */
const QueryIdSchema = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);

/** First frame on every connection, from the side that opened it. */
export const HelloFrameSchema = z.object({ k: z.literal('hello'), nodeId: NodeIdSchema, url: UrlSchema, paths: list(PathSchema), join: z.boolean() });
/** Control's answer to hello: the whole directory (empty for a direct, non-joining connection). */
export const WelcomeFrameSchema = z.object({ k: z.literal('welcome'), nodeId: NodeIdSchema, directory: list(DirEntrySchema) });
/** A node (un)registers its actors with control. */
export const RegFrameSchema = z.object({ k: z.literal('reg'), add: list(DirEntrySchema).optional(), remove: list(PathSchema).optional() });
/** Control broadcasts directory changes. */
export const DirFrameSchema = z.object({
  k: z.literal('dir'),
  add: list(DirEntrySchema).optional(),
  remove: list(PathSchema).optional(),
  goneNodes: list(NodeIdSchema).optional(),
});
/** An actor message; `id` set when it is a query (the reply goes to `from`, a node path). */
export const EnvFrameSchema = z.object({
  k: z.literal('env'),
  to: PathSchema,
  from: PathSchema,
  id: QueryIdSchema.optional(),
  type: z.string().max(256),
  body: BodySchema,
});
/** A query's reply, addressed to the querying node's path `node/<id>`. */
export const ReplyFrameSchema = z.object({ k: z.literal('reply'), to: PathSchema, id: QueryIdSchema, body: z.unknown().optional(), error: WireErrorSchema.optional() });

export const FrameSchema = z.discriminatedUnion('k', [HelloFrameSchema, WelcomeFrameSchema, RegFrameSchema, DirFrameSchema, EnvFrameSchema, ReplyFrameSchema]);
export type Frame = z.infer<typeof FrameSchema>;
export type FrameKind = Frame['k'];
export const FRAME_KINDS: readonly FrameKind[] = ['hello', 'welcome', 'reg', 'dir', 'env', 'reply'];

const packr = new Packr({ useRecords: false, moreTypes: false, structuredClone: false });

export function encodeFrame(f: Frame): Buffer {
  return packr.pack(f);
}

/** One place builds the error of a bad frame: the field (`dir.add[0][1]`) and what is wrong. */
export function badFrame(field: string, message: string): MicroserveError {
  return new MicroserveError('BAD_FRAME', `${field}: ${message}`, { field });
}

/** Decodes and checks a frame against its kind's schema; throws BAD_FRAME naming the field. */
export function decodeFrame(data: Buffer): Frame {
  let raw: unknown;
  try {
    raw = packr.unpack(data);
  } catch (e) {
    throw badFrame('frame', `not valid msgpack (${(e as Error).message.slice(0, 80)})`);
  }
  const r = FrameSchema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const kind = raw !== null && typeof raw === 'object' && typeof (raw as { k?: unknown }).k === 'string' ? (raw as { k: string }).k : null;
  if (issue.path.length === 0 || (issue.path.length === 1 && issue.path[0] === 'k')) {
    throw badFrame('k', kind === null ? 'a frame must be a map with a kind `k`' : `unknown frame kind '${kind.slice(0, 32)}'`);
  }
  const field = `${kind}.${issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[')}`;
  throw badFrame(field, issue.message);
}

/** ws close codes used by the runtime. */
export const CLOSE = {
  /** ws's own code for a message over maxPayload. */
  TOO_LARGE: 1009,
  /** A frame that fails its schema or comes when it may not; the reason starts `BAD_FRAME`. */
  BAD_FRAME: 4400,
  HEARTBEAT: 4408,
  /** The node failed on a frame it had accepted (a bug, logged); only that connection closes. */
  INTERNAL: 1011,
  SHUTDOWN: 1001,
} as const;

/** A ws close reason (at most 123 bytes) that starts with the stable code: `BAD_FRAME dir.add: ...`. */
export function closeReason(code: string, message: string): string {
  const s = `${code} ${message}`;
  return Buffer.byteLength(s) <= 123 ? s : Buffer.from(s).subarray(0, 120).toString('utf8').replace(/\uFFFD+$/, '') + '...';
}
