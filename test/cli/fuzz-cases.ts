/**
 * Generators for the control-plane fuzz test: malformed frames of every kind (each one must close
 * its connection) and malformed messages to every actor kind (each one must be refused with
 * BAD_MESSAGE). Seeded: a failure replays with the same seed.
 *
 * Messages are mutations of a valid template (one field set to a value of the wrong type, or a
 * bogus `type`), so a fuzz message is never a valid destructive one (`kill`, `stop`, `exit`).
 */
import { Packr } from 'msgpackr';
import type { FrameKind } from '../../actors/runtime/frames.ts';

const packr = new Packr({ useRecords: false, moreTypes: false, structuredClone: false });
export type Rand = () => number;

const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
const int = (r: Rand, n: number) => Math.floor(r() * n);

/** A random msgpack-able value, up to `depth` levels deep. */
export function randomValue(r: Rand, depth = 3): unknown {
  switch (int(r, depth > 0 ? 10 : 7)) {
    case 0:
      return null;
    case 1:
      return r() < 0.5;
    case 2:
      return pick(r, [0, -1, 1.5, 2 ** 53, -(2 ** 60), NaN, Infinity, 4294967296]);
    case 3:
      return pick(r, ['', 'x', 'engine/e0', 'node/control', '../../etc', 'é'.repeat(300), 'a'.repeat(5000)]);
    case 4:
      return new Uint8Array(int(r, 64));
    case 5:
      return int(r, 1000);
    case 6:
      return pick(r, ['hello', 'welcome', 'reg', 'dir', 'env', 'reply', 'status']);
    case 7:
      return Array.from({ length: int(r, 5) }, () => randomValue(r, depth - 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = int(r, 5); i > 0; i--) o[pick(r, ['k', 'type', 'to', 'from', 'id', 'body', 'add', 'paths', 'x'])] = randomValue(r, depth - 1);
      return o;
    }
  }
}

/** A value of the wrong type for a field that holds `good` (never undefined: optional fields stay set). */
function wrongFor(r: Rand, good: unknown): unknown {
  if (good === null) return pick(r, [0, true, -1.5]); // a nullable field takes any string
  for (;;) {
    const v = randomValue(r, 2);
    if (v !== undefined && typeof v !== typeof good) return v;
  }
}

/** Well-formed frames of each kind (as a fuzz client could send them after its hello). */
export function frameTemplates(nodeId: string): Record<FrameKind, Record<string, unknown>> {
  return {
    hello: { k: 'hello', nodeId, url: null, paths: [], join: true },
    welcome: { k: 'welcome', nodeId: 'control', directory: [] },
    reg: { k: 'reg', add: [[`fuzz/${nodeId}`, nodeId, null]], remove: [`fuzz/${nodeId}`] },
    dir: { k: 'dir', add: [], remove: [], goneNodes: [] },
    env: { k: 'env', to: 'engine/e0', from: `node/${nodeId}`, id: 1, type: 'status', body: { type: 'status' } },
    reply: { k: 'reply', to: 'node/control', id: 1, error: { code: 'X', message: 'y' } },
  };
}

export interface BadFrame {
  /** What it is, for failure messages; starts with the frame kind for mutated frames. */
  what: string;
  /** Send a valid hello first (false: the bad frame is the first frame). */
  hello: boolean;
  data: Buffer | string;
}

/**
 * The i-th bad frame: a mutated field of a kind's template, a frame out of protocol order, an
 * unknown kind, random msgpack, truncated or random bytes, a text frame, a huge list, deep nesting.
 */
export function badFrame(r: Rand, i: number, nodeId: string): BadFrame {
  const t = frameTemplates(nodeId);
  const kinds = Object.keys(t) as FrameKind[];
  const kind = kinds[i % kinds.length];
  switch (int(r, 12)) {
    case 0:
    case 1:
    case 2:
    case 3: {
      // one field of the kind's template gets a value of the wrong type
      const f = { ...t[kind] };
      const fields = Object.keys(f).filter((k) => k !== 'k' && !(kind === 'reply' && k === 'body'));
      const field = pick(r, fields);
      f[field] = wrongFor(r, f[field]);
      return { what: `${kind}.${field} = ${String(JSON.stringify(f[field])).slice(0, 40)}`, hello: kind !== 'hello', data: packr.pack(f) };
    }
    case 4: {
      // a well-formed frame where it may not come
      const cases: [string, boolean, object][] = [
        ['env before hello', false, t.env],
        ['reg before hello', false, t.reg],
        ['reply before hello', false, t.reply],
        ['env with a spoofed from', true, { ...t.env, from: 'node/control' }],
        ['dir to control', true, t.dir],
        ['welcome to control', true, t.welcome],
        ['hello twice', true, t.hello],
      ];
      const [what, hello, f] = pick(r, cases);
      return { what, hello, data: packr.pack(f) };
    }
    case 5:
      return { what: 'unknown kind', hello: true, data: packr.pack({ ...t.env, k: pick(r, ['nope', '', 'ENV', 'env '.repeat(40)]) }) };
    case 6: {
      const v = randomValue(r, 4);
      const isMap = v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array);
      // a random map could by chance be a valid frame; a numeric kind never is
      return { what: 'random msgpack', hello: true, data: packr.pack(isMap ? { ...(v as object), k: 7 } : v) };
    }
    case 7: {
      const whole = packr.pack(t[kind]);
      return { what: `truncated ${kind}`, hello: kind !== 'hello', data: whole.subarray(0, Math.max(1, int(r, whole.length - 1))) };
    }
    case 8:
      return { what: 'random bytes', hello: true, data: Buffer.from([0xc1, ...Array.from({ length: int(r, 64) }, () => int(r, 256))]) };
    case 9:
      return { what: 'text frame', hello: r() < 0.5, data: JSON.stringify(t[kind]) };
    case 10: {
      // over the list cap (65536)
      const n = 70_000;
      const isHello = kind === 'hello';
      const big = isHello ? { ...t.hello, paths: new Array(n).fill('a/b') } : { ...t.reg, remove: new Array(n).fill('a/b') };
      return { what: `huge list in ${isHello ? 'hello' : 'reg'}`, hello: !isHello, data: packr.pack(big) };
    }
    default: {
      // deep nesting: a stack overflow in the decoder must be a bad frame too
      const depth = 100_000 + int(r, 1000);
      return { what: 'deep nesting', hello: true, data: Buffer.concat([Buffer.alloc(depth, 0x91), Buffer.from([0xc0])]) };
    }
  }
}

/** The agent host of the fuzz cluster (`microserve agent --host fz`): its supervisor, keeper and proc actors are fuzzed too. */
export const AGENT_HOST = 'fz';

/** Valid message templates per actor path (never sent as is: see `badMessage`). */
export const MESSAGE_TEMPLATES: Record<string, Record<string, unknown>[]> = {
  control: [{ type: 'kill', path: 'engine/e0', process: false }, { type: 'restart', path: 'engine/e0' }, { type: 'apply', topology: 'model: tiny' }],
  router: [{ type: 'tokens', id: 'r', engine: 'e0', tokens: [1], finish: 'stop' }, { type: 'tokens_batch', engine: 'e0', items: [{ id: 'r', tokens: [1] }, { id: 's', tokens: [], finish: 'stop' }] }],
  'supervisor/local': [
    { type: 'start', spec: { kind: 'module', nodeId: 'n', module: 'm', paths: [] } },
    { type: 'stop', nodeId: 'engine-e0', graceMs: 1 },
    { type: 'kill', nodeId: 'engine-e0' },
    { type: 'restart', nodeId: 'engine-e0' },
  ],
  [`supervisor/${AGENT_HOST}`]: [
    { type: 'start', spec: { kind: 'module', nodeId: 'n', module: 'm', paths: [] } },
    { type: 'stop', nodeId: 'n', graceMs: 1 },
    { type: 'restart', nodeId: 'n' },
  ],
  'engine/e0': [
    { type: 'prep_recv', id: 'f', promptIds: [1, 2], end: 2, ttlMs: 100 },
    { type: 'start_generate', id: 'f', promptIds: [1, 2], begin: 1, sampling: { maxTokens: 1, temperature: 0, topP: 1, stopTokenIds: [] }, replyTo: 'router' },
    { type: 'remote_send', id: 'f', promptIds: [1, 2], begin: 0, end: 2, kvAddr: { engine: 'e1', pageIds: [0], pageSize: 16, matchedLen: 0, end: 2, transports: ['host'] } },
    { type: 'kv_write', id: 'f', pageIds: [0], data: new Uint8Array(8) },
    { type: 'set_role', role: 'decode' },
    { type: 'abort', id: 'f' },
    { type: 'test_fail_steps', count: 1 },
  ],
  'kv/e0': [{ type: 'match', promptIds: [1, 2] }],
  nvshmem: [{ type: 'claim', job: 'fuzz', rank: 0 }, { type: 'publish', job: 'fuzz', uid: null }],
  'proc/engine-e0': [{ type: 'stop_actor', path: 'engine/e0' }, { type: 'restart_actor', path: 'engine/e0' }],
  [`proc/agent-${AGENT_HOST}`]: [{ type: 'stop_actor', path: `supervisor/${AGENT_HOST}` }, { type: 'restart_actor', path: `supervisor/${AGENT_HOST}` }],
  [`keeper/${AGENT_HOST}`]: [{ type: 'kill', nodeId: `agent-${AGENT_HOST}` }, { type: 'restart', nodeId: `agent-${AGENT_HOST}` }],
  [`proc/keeper-${AGENT_HOST}`]: [{ type: 'stop_actor', path: `keeper/${AGENT_HOST}` }, { type: 'restart_actor', path: `keeper/${AGENT_HOST}` }],
};

/** A message to `path` that its schema must refuse: one field of a template made wrong, or a bogus type. */
export function badMessage(r: Rand, path: string): Record<string, unknown> {
  const m = { ...pick(r, MESSAGE_TEMPLATES[path]) };
  if (r() < 0.2) return { ...m, type: pick(r, ['', 'STATUS', 'teleport', 'status ', 7, null, ['status']]) };
  const field = pick(r, Object.keys(m).filter((k) => k !== 'type'));
  const inner = m[field];
  if (inner !== null && typeof inner === 'object' && !Array.isArray(inner) && !(inner instanceof Uint8Array) && r() < 0.5) {
    // a nested field: sampling.topP, kvAddr.pageIds, spec.kind...
    const sub = { ...(inner as Record<string, unknown>) };
    const k = pick(r, Object.keys(sub));
    sub[k] = wrongFor(r, sub[k]);
    m[field] = sub;
  } else {
    m[field] = wrongFor(r, inner);
  }
  return m;
}
