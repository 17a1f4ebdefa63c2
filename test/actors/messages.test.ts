/**
 * Actor messages at the boundary: each actor kind checks what it receives against its schema
 * (actors/messages.ts). A bad message is refused with BAD_MESSAGE naming the field, the actor
 * keeps running, and its state stays whole (an engine's KV integrity check, a supervisor's table).
 * Real actors on a real runtime: an engine (fixture model), its kv view, a node supervisor, the
 * nvshmem rendezvous; the queries come from a second node over ws.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnEngine, type EngineHandle } from '../../actors/engine/actor.ts';
import { isMicroserveError, type MicroserveError } from '../../common/errors.ts';
import { ControlMsgSchema, EngineMsgSchema, EngineSpecSchema, KeeperMsgSchema, messageParser, ProcMsgSchema, RouterMsgSchema, SupervisorMsgSchema, type EngineStatus, type PrepRecvResult } from '../../actors/messages.ts';
import { ActorSystem } from '../../actors/runtime/system.ts';
import { NodeSupervisor } from '../../supervisors/node-supervisor.ts';
import { EngineSchema } from '../../topology/schema.ts';
import { spawnNvshmemRendezvous } from '../../supervisors/nvshmem-rendezvous.ts';
import { spawnSupervisorActor } from '../../supervisors/supervisor-actor.ts';
import { FIXTURE, greedy } from '../engine/helpers.ts';

const TOKEN = 'messages-test-token-0123456789';
let control: ActorSystem;
let client: ActorSystem;
let engine: EngineHandle;
let sup: NodeSupervisor;

/** The code and field of a query's typed failure ('no error' when it succeeded). */
async function refusal(path: string, msg: object): Promise<{ code: string; message: string }> {
  try {
    await client.ref(path).query(msg, 10_000);
    return { code: 'no error', message: '' };
  } catch (e) {
    return isMicroserveError(e) ? { code: e.code, message: e.message } : { code: 'untyped', message: String(e) };
  }
}

test.before(async () => {
  control = await ActorSystem.start({ nodeId: 'control', token: TOKEN, listen: { host: '127.0.0.1', port: 0 } });
  client = await ActorSystem.start({ nodeId: 'script', token: TOKEN, controlUrl: control.url!, listen: null });
  engine = await spawnEngine(control, { name: 'e0', model: FIXTURE, kvPages: 32, pageSize: 16, threads: 1 });
  sup = new NodeSupervisor(control, { host: 'local', controlUrl: control.url!, token: TOKEN });
  spawnSupervisorActor(control, 'local', sup);
  spawnNvshmemRendezvous(control);
  control.spawn('sink/t', () => undefined);
  for (let i = 0; i < 200 && !client.listActors().some((a) => a.path === 'nvshmem'); i++) await new Promise((r) => setTimeout(r, 10));
});

test.after(async () => {
  await sup.stopAll(2000);
  await engine.close();
  await client.close();
  await control.close();
});

test('parsers name the field; unknown types list the known ones', () => {
  const cases: [unknown, (m: unknown) => unknown, string][] = [
    [{ type: 'start', spec: 5 }, messageParser('supervisor/local', SupervisorMsgSchema), 'spec'],
    [{ type: 'start', spec: { kind: 'module', nodeId: 'x', module: 'm', paths: [7] } }, messageParser('supervisor/local', SupervisorMsgSchema), 'spec.paths[0]'],
    [{ type: 'kill', path: 5 }, messageParser('control', ControlMsgSchema), 'path'],
    [{ type: 'apply', topology: 5 }, messageParser('control', ControlMsgSchema), 'topology'],
    [{ type: 'tokens', id: 'r', engine: 'e0', tokens: [1, -1] }, messageParser('router', RouterMsgSchema), 'tokens[1]'],
    [{ type: 'tokens', id: 'r', engine: 'e0', tokens: [1], finish: 'maybe' }, messageParser('router', RouterMsgSchema), 'finish'],
    [{ type: 'tokens_batch', engine: 'e0', items: [{ id: 'r', tokens: [1] }, { id: 's', tokens: [2.5] }] }, messageParser('router', RouterMsgSchema), 'items[1].tokens[0]'],
    [{ type: 'tokens_batch', engine: 'e0', items: [{ id: '', tokens: [] }] }, messageParser('router', RouterMsgSchema), 'items[0].id'],
    [{ type: 'tokens_batch', engine: 'e0', items: 'r' }, messageParser('router', RouterMsgSchema), 'items'],
    [{ type: 'remote_send', id: 'r', promptIds: [1], begin: 0, end: 1, kvAddr: { engine: 'd', pageIds: ['a'], pageSize: 16, matchedLen: 0, end: 1, transports: [] } }, messageParser('engine/e0', EngineMsgSchema), 'kvAddr.pageIds[0]'],
    [{ type: 'kv_write', id: 'r', pageIds: [1], data: 'bytes' }, messageParser('engine/e0', EngineMsgSchema), 'data'],
    [{ type: 'teleport' }, messageParser('engine/e0', EngineMsgSchema), 'type'],
    [{}, messageParser('engine/e0', EngineMsgSchema), 'type'],
  ];
  for (const [msg, parse, field] of cases) {
    try {
      parse(msg);
      assert.unreachable(`accepted ${JSON.stringify(msg)}`);
    } catch (e) {
      assert.is((e as MicroserveError).code, 'BAD_MESSAGE', String(e));
      assert.is((e as MicroserveError).info?.field, field, (e as Error).message);
    }
  }
  assert.match((() => { try { messageParser('kv/e0', EngineMsgSchema)({ type: 'x' }); } catch (e) { return (e as Error).message; } return ''; })(), /expected generate, prep_recv/);
  // defaults filled, unknown fields dropped
  const ok = messageParser('engine/e0', EngineMsgSchema)({ type: 'generate', id: 'g', promptIds: [1], sampling: { maxTokens: 2, seed: null }, replyTo: 'router', extra: 1 });
  assert.equal(ok, { type: 'generate', id: 'g', promptIds: [1], sampling: { maxTokens: 2, temperature: 0, topP: 1, seed: undefined, stopTokenIds: [] }, replyTo: 'router' });
});

test('sampling extras and token logprobs travel whole (kept, not stripped) and are bounded', () => {
  const engine = messageParser('engine/e0', EngineMsgSchema);
  const sampling = { maxTokens: 4, temperature: 0.7, topP: 0.9, seed: 3, stopTokenIds: [2], topK: 5, minP: 0.1, repetitionPenalty: 1.2, presencePenalty: 0.5, frequencyPenalty: -0.5, logitBias: [[1, -100], [7, 2.5]], minTokens: 2, logprobs: 3, numPriorOutput: 1 };
  const msg = { type: 'start_generate', id: 's', promptIds: [1, 2], begin: 0, sampling, replyTo: 'router' };
  assert.equal(engine(msg), msg);
  const bad: [Record<string, unknown>, string][] = [
    [{ topK: -1 }, 'sampling.topK'],
    [{ minP: 2 }, 'sampling.minP'],
    [{ repetitionPenalty: 0 }, 'sampling.repetitionPenalty'],
    [{ presencePenalty: 'x' }, 'sampling.presencePenalty'],
    [{ logprobs: 21 }, 'sampling.logprobs'],
    [{ logitBias: [[1, Infinity]] }, 'sampling.logitBias[0]'],
    [{ logitBias: 'junk' }, 'sampling.logitBias'],
    [{ minTokens: 1.5 }, 'sampling.minTokens'],
    [{ numPriorOutput: -1 }, 'sampling.numPriorOutput'],
  ];
  for (const [extra, field] of bad) {
    try {
      engine({ ...msg, sampling: { ...sampling, ...extra } });
      assert.unreachable(`accepted ${JSON.stringify(extra)}`);
    } catch (e) {
      assert.is((e as MicroserveError).code, 'BAD_MESSAGE', String(e));
      assert.is((e as MicroserveError).info?.field, field, (e as Error).message);
    }
  }
  const router = messageParser('router', RouterMsgSchema);
  const tokens = { type: 'tokens', id: 'r', engine: 'e0', tokens: [4, 5], logprobs: [{ logprob: -0.1, top: [[4, -0.1], [9, -Infinity]] }, { logprob: -2, top: [] }] };
  assert.equal(router(tokens), tokens);
  for (const [logprobs, field] of [[[{ logprob: NaN, top: [] }], 'logprobs[0].logprob'], [[{ logprob: -1, top: [[-1, 0]] }], 'logprobs[0].top[0]'], [[null], 'logprobs[0]']] as const) {
    try {
      router({ ...tokens, tokens: [4], logprobs });
      assert.unreachable(`accepted ${JSON.stringify(logprobs)}`);
    } catch (e) {
      assert.is((e as MicroserveError).info?.field, field, (e as Error).message);
    }
  }
});

test("a ProcSpec's engine has the topology engine's fields and defaults (two schemas, one shape)", () => {
  assert.equal(Object.keys(EngineSpecSchema.shape).sort(), Object.keys(EngineSchema.shape).sort());
  assert.equal(EngineSpecSchema.parse({ name: 'e0' }), EngineSchema.parse({ name: 'e0' }));
  const full = { name: 'g', role: 'decode', device: 'cuda:1', host: 'h2', kvPages: 'auto', pageSize: 32, maxBatchTokens: 2048, maxNumSeqs: 64, gpuMemoryUtilization: 0.5, threads: 2 };
  assert.equal(EngineSpecSchema.parse(full), EngineSchema.parse(full));
  assert.not.ok(EngineSpecSchema.safeParse({ name: 'e0', kvPagez: 4 }).success); // strict, like the file's
});

test('every message type of supervision and step-failure isolation has a schema (accepted when well-formed)', () => {
  const accepted: [unknown, (m: unknown) => unknown][] = [
    [{ type: 'restart', path: 'engine/e0' }, messageParser('control', ControlMsgSchema)],
    [{ type: 'kill', path: 'router', process: false }, messageParser('control', ControlMsgSchema)],
    [{ type: 'restart', nodeId: 'engine-e0' }, messageParser('supervisor/local', SupervisorMsgSchema)],
    [{ type: 'restart_actor', path: 'supervisor/h2' }, messageParser('proc/agent-h2', ProcMsgSchema)],
    [{ type: 'stop_actor', path: 'engine/e0' }, messageParser('proc/engine-e0', ProcMsgSchema)],
    [{ type: 'supervision' }, messageParser('proc/engine-e0', ProcMsgSchema)],
    [{ type: 'test_fail_steps', count: 2 }, messageParser('engine/e0', EngineMsgSchema)],
    [{ type: 'kill', nodeId: 'agent-h2' }, messageParser('keeper/h2', KeeperMsgSchema)],
    [{ type: 'restart', nodeId: 'agent-h2' }, messageParser('keeper/h2', KeeperMsgSchema)],
    [{ type: 'status' }, messageParser('keeper/h2', KeeperMsgSchema)],
  ];
  for (const [msg, parse] of accepted) assert.equal(parse(msg), msg);
  for (const [msg, parse, field] of [
    [{ type: 'restart', path: 7 }, messageParser('control', ControlMsgSchema), 'path'],
    [{ type: 'restart', nodeId: '../x' }, messageParser('supervisor/local', SupervisorMsgSchema), 'nodeId'],
    [{ type: 'restart_actor' }, messageParser('proc/engine-e0', ProcMsgSchema), 'path'],
    [{ type: 'test_fail_steps', count: -1 }, messageParser('engine/e0', EngineMsgSchema), 'count'],
    [{ type: 'kill', nodeId: 5 }, messageParser('keeper/h2', KeeperMsgSchema), 'nodeId'],
    [{ type: 'start', spec: { kind: 'module', nodeId: 'x', module: 'm', paths: [] } }, messageParser('keeper/h2', KeeperMsgSchema), 'type'],
  ] as [unknown, (m: unknown) => unknown, string][]) {
    try {
      parse(msg);
      assert.unreachable(`accepted ${JSON.stringify(msg)}`);
    } catch (e) {
      assert.is((e as MicroserveError).code, 'BAD_MESSAGE', String(e));
      assert.is((e as MicroserveError).info?.field, field, (e as Error).message);
    }
  }
});

test("supervisor: the issue's {type:start, spec:5} is refused naming spec; status keeps working", async () => {
  const r = await refusal('supervisor/local', { type: 'start', spec: 5 });
  assert.is(r.code, 'BAD_MESSAGE');
  assert.match(r.message, /start\.spec/);
  assert.is((await refusal('supervisor/local', { type: 'stop', nodeId: '../x' })).code, 'BAD_MESSAGE');
  const st = await client.ref('supervisor/local').query<{ procs: unknown[] }>({ type: 'status' }, 5000);
  assert.equal(st.procs, []); // nothing was started
});

test('engine: bad shapes are BAD_MESSAGE; bad ids, ranges and page ids are typed; KV stays whole', async () => {
  const E = 'engine/e0';
  const shapes: object[] = [
    { type: 'prep_recv', id: 5, promptIds: [1, 2], end: 2 },
    { type: 'prep_recv', id: 'p', promptIds: 'abc', end: 2 },
    { type: 'start_generate', id: 's', promptIds: [1], begin: -1, sampling: greedy(1), replyTo: 'sink/t' },
    { type: 'start_generate', id: 's', promptIds: [1], begin: 0, sampling: { maxTokens: 1, topP: 7 }, replyTo: 'sink/t' },
    { type: 'remote_send', id: 'x', promptIds: [1], begin: 0, end: 1, kvAddr: 5 },
    { type: 'kv_write', id: 'x', pageIds: [1.5], data: new Uint8Array(4) },
    { type: 'set_role', role: 'boss' },
    { type: 'abort' },
    { type: 'match_prefix', promptIds: [null] },
  ];
  for (const m of shapes) assert.is((await refusal(E, m)).code, 'BAD_MESSAGE', JSON.stringify(m));
  // well-formed but wrong against the engine's state: the engine's own typed errors
  const prompt = Array.from({ length: 40 }, (_, i) => 10 + i);
  assert.is((await refusal(E, { type: 'prep_recv', id: 'r1', promptIds: prompt, end: 41 })).code, 'BAD_REQUEST'); // end past the prompt
  assert.is((await refusal(E, { type: 'prep_recv', id: 'r1', promptIds: [10, 1 << 30], end: 1 })).code, 'BAD_TOKEN');
  const pr = await client.ref(E).query<PrepRecvResult>({ type: 'prep_recv', id: 'r1', promptIds: prompt, end: 40, ttlMs: 60_000 }, 5000);
  const st0 = await client.ref(E).query<EngineStatus>({ type: 'status' }, 5000);
  const foreign = [...Array(32).keys()].find((p) => !pr.kvAddr.pageIds.includes(p))!;
  const pageBytes = engine.loaded.backend.pageBytes;
  const writes: [object, string][] = [
    [{ type: 'kv_write', id: 'r1', pageIds: [foreign], data: new Uint8Array(pageBytes) }, 'page not of the reservation'],
    [{ type: 'kv_write', id: 'r1', pageIds: [1 << 20], data: new Uint8Array(pageBytes) }, 'page id past the pool'],
    [{ type: 'kv_write', id: 'r1', pageIds: [pr.kvAddr.pageIds[0]], data: new Uint8Array(3) }, 'short data'],
    [{ type: 'kv_write', id: 'nobody', pageIds: [pr.kvAddr.pageIds[0]], data: new Uint8Array(pageBytes) }, 'unknown request'],
    [{ type: 'start_generate', id: 'r1', promptIds: [...prompt.slice(0, 39), 9], begin: 40, sampling: greedy(1), replyTo: 'sink/t' }, 'prompt differs'],
    [{ type: 'remote_send', id: 'r2', promptIds: prompt, begin: 30, end: 20, kvAddr: pr.kvAddr }, 'begin past end'],
  ];
  for (const [m, why] of writes) {
    const r = await refusal(E, m);
    assert.ok(r.code !== 'no error' && r.code !== 'untyped' && r.code !== 'ACTOR_CRASHED', `${why}: ${r.code} ${r.message}`);
  }
  // the reservation is untouched by the refused writes and still usable; nothing leaked
  const st1 = await client.ref(E).query<EngineStatus>({ type: 'status' }, 5000);
  assert.equal(st1.kv, st0.kv);
  assert.equal(await client.ref(E).query({ type: 'abort', id: 'r1' }, 5000), { aborted: true });
  const check = await client.ref('kv/e0').query<{ ok: boolean; stats: { reserved: number; inUse: number } }>({ type: 'check' }, 5000);
  assert.ok(check.ok);
  assert.is(check.stats.reserved + check.stats.inUse, 0);
});

test('kv view and nvshmem rendezvous refuse bad messages and keep answering', async () => {
  assert.is((await refusal('kv/e0', { type: 'match', promptIds: { 0: 1 } })).code, 'BAD_MESSAGE');
  assert.is((await refusal('kv/e0', { type: 'drop_all' })).code, 'BAD_MESSAGE');
  assert.equal(await client.ref('kv/e0').query({ type: 'match', promptIds: [1, 2, 3] }, 5000), { matchedLen: 0 });
  assert.is((await refusal('nvshmem', { type: 'claim', job: 'j', rank: -1 })).code, 'BAD_MESSAGE');
  assert.is((await refusal('nvshmem', { type: 'publish', job: 'j', uid: new Uint8Array(5) })).code, 'BAD_MESSAGE');
  assert.is((await refusal('nvshmem', { type: 'get', job: 7 })).code, 'BAD_MESSAGE');
  assert.equal(await client.ref('nvshmem').query({ type: 'claim', job: 'j', rank: 0 }, 5000), { first: true });
  assert.equal(await client.ref('nvshmem').query({ type: 'get', job: 'j' }, 5000), { error: undefined, uid: undefined });
});

test.run();
