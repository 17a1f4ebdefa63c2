/**
 * The programmable router: `startRouter` spawns the `router` actor (engines stream `tokens` to
 * it; it answers `status`), polls the engines, and serves the OpenAI-compatible HTTP API.
 *
 * Request path: HTTP → parse + tokenize (http/) → RequestRunner.submit → the plan's strategy
 * (AttemptContext: prep_recv / remote_send / start_generate) → `tokens` messages → router actor
 * → runner → the client's stream. Plans change in place with `setPlan`.
 */
import { GrammarWorkerClient } from '../engine/grammar/worker-client.ts';
import { TokenizePool } from '../text/tokenize-pool.ts';
import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { MicroserveError } from '../../common/errors.ts';
import { log } from '../../common/log.ts';
import { messageParser, RouterMsgSchema, type Role } from '../messages.ts';
import type { ActorSystemApi } from '../runtime/types.ts';
import { Admission } from './admission.ts';
import { EnginePool, enginePath } from './engine-pool.ts';
import { buildApp } from './http/app.ts';
import { RouterMetrics } from './metrics.ts';
import { RequestRunner, type ActivePlan } from './request-runner.ts';
import { loadStrategy } from './strategy-loader.ts';
import type { Plan, PlanApplied, PlanEngine, Router, RouterOptions, RouterStatus } from './types.ts';

export type { Plan, PlanApplied, Router, RouterOptions, RouterStatus } from './types.ts';

export const ROUTER_PATH = 'router';
const ROLES: Role[] = ['prefill', 'decode', 'both'];

function checkEngines(engines: PlanEngine[]): PlanEngine[] {
  if (!Array.isArray(engines) || engines.length === 0) throw new MicroserveError('BAD_CONFIG', 'a plan needs at least one engine', { field: 'engines' });
  const seen = new Set<string>();
  for (const [i, e] of engines.entries()) {
    if (!e || typeof e.name !== 'string' || !/^[a-zA-Z0-9_.-]+$/.test(e.name)) throw new MicroserveError('BAD_CONFIG', `engines[${i}].name is not a valid engine name`, { field: `engines[${i}].name` });
    if (!ROLES.includes(e.role)) throw new MicroserveError('BAD_CONFIG', `engines[${i}].role must be one of ${ROLES.join(', ')}`, { field: `engines[${i}].role` });
    if (seen.has(e.name)) throw new MicroserveError('BAD_CONFIG', `engine '${e.name}' is listed twice`, { field: `engines[${i}].name` });
    seen.add(e.name);
  }
  return engines.map((e) => ({ name: e.name, role: e.role }));
}

export async function startRouter(system: ActorSystemApi, opts: RouterOptions): Promise<Router> {
  const requestTimeoutMs = opts.requestTimeoutMs ?? 60_000;
  const opTimeoutMs = opts.opTimeoutMs ?? 10_000;
  const baseDir = opts.baseDir ?? process.cwd();
  if (!opts.modelName) throw new MicroserveError('BAD_CONFIG', 'modelName is required', { field: 'modelName' });
  if (!(opts.contextLength > 1)) throw new MicroserveError('BAD_CONFIG', 'contextLength must be > 1', { field: 'contextLength' });
  const maxQueue = opts.maxQueue ?? null;
  if (maxQueue !== null && !(Number.isInteger(maxQueue) && maxQueue >= 1)) throw new MicroserveError('BAD_CONFIG', `maxQueue must be an integer >= 1 (got ${maxQueue})`, { field: 'router.maxQueue' });

  let plan: ActivePlan = { version: 1, engines: checkEngines(opts.engines), strategy: await loadStrategy(opts.strategy, opts.params ?? {}, baseDir), inFlight: 0 };
  const pool = new EnginePool(system, { statusIntervalMs: opts.statusIntervalMs ?? 500, statusTimeoutMs: Math.min(opTimeoutMs, 2000) });
  const metrics = new RouterMetrics(pool, opts.loopMonitor);
  metrics.planVersion.set(1);
  pool.setPlanEngines(plan.engines);
  let lastPlanChange: RouterStatus['lastPlanChange'] = null;
  let draining: { plan: ActivePlan; since: number } | null = null;

  const runner = new RequestRunner({
    system,
    pool,
    metrics,
    opTimeoutMs,
    transferTtlMs: opts.transferTtlMs ?? 30_000,
    replyTo: ROUTER_PATH,
    requestTimeoutMs,
    maxAttempts: opts.maxAttempts ?? 8,
    currentPlan: () => plan,
    onJobDone: (p) => {
      if (draining && p === draining.plan && p.inFlight === 0) {
        if (lastPlanChange) lastPlanChange.drainMs = performance.now() - draining.since;
        draining = null;
      }
    },
  });

  const parse = messageParser(ROUTER_PATH, RouterMsgSchema);
  system.spawn(ROUTER_PATH, (raw: unknown) => {
    const msg = parse(raw);
    switch (msg.type) {
      case 'tokens':
        return runner.onTokens(msg.engine, msg);
      case 'tokens_batch':
        for (const item of msg.items) runner.onTokens(msg.engine, item);
        return;
      case 'status':
        return status();
    }
  });
  pool.start();

  const tokenizer = opts.tokenizer;
  // long prompts are tokenized in a worker thread, off the loop that serves every other request
  const tokenizePool = tokenizer ? new TokenizePool(tokenizer.source, 1) : null;
  // grammars are checked off the event loop: building one from a large schema can take seconds
  const grammarChecker = new GrammarWorkerClient({ tokenizer: null, vocabSize: 0, eosTokenIds: [] }, { timeoutMs: 20_000 });
  const admission = new Admission({
    pool,
    planEngines: () => plan.engines,
    numQueued: () => runner.numQueued,
    ttftS: () => runner.ttftEwmaS,
    maxQueue,
    contextLength: opts.contextLength,
  });
  const app = buildApp({
    runner,
    admission,
    pool,
    metrics,
    modelName: opts.modelName,
    tokenizer,
    tokenizePool,
    contextLength: opts.contextLength,
    vocabSize: opts.vocabSize ?? tokenizer?.vocabSize ?? null,
    eosTokenIds: opts.eosTokenIds ?? tokenizer?.eosTokenIds ?? [],
    defaultMaxTokens: opts.defaultMaxTokens ?? null,
    grammarChecker,
    apiKey: opts.apiKey ?? null,
    maxBodyBytes: opts.maxBodyBytes ?? 4 * 1024 * 1024,
  });
  const host = opts.host ?? '127.0.0.1';
  let server: ServerType;
  try {
    server = await new Promise((resolve, reject) => {
      const s = serve({ fetch: app.fetch, hostname: host, port: opts.port ?? 8000 }, () => resolve(s));
      s.once('error', (e) => reject(new MicroserveError('BAD_CONFIG', `router cannot listen on ${host}:${opts.port ?? 8000}: ${e.message}`, { field: 'router.port' })));
    });
  } catch (e) {
    pool.close();
    void tokenizePool?.close();
    void grammarChecker.shutdown();
    system.stop(ROUTER_PATH);
    throw e;
  }
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}`;
  log.info('router listening', { url, strategy: opts.strategy, engines: plan.engines.map((e) => `${e.name}(${e.role})`).join(' ') });

  function status(): RouterStatus {
    return {
      url,
      model: opts.modelName,
      planVersion: plan.version,
      strategy: plan.strategy.name,
      params: plan.strategy.params,
      engines: pool.views(),
      requestsInFlight: runner.numInFlight,
      requestsWaiting: runner.numWaiting,
      requestsQueued: runner.numQueued,
      maxQueue,
      lastPlanChange: lastPlanChange ? { ...lastPlanChange } : null,
      counters: { ...runner.counters },
    };
  }

  async function setPlan(next: Plan): Promise<PlanApplied> {
    const t0 = performance.now();
    const engines = checkEngines(next.engines);
    const strategy = await loadStrategy(next.strategy, next.params ?? {}, baseDir);
    const changed = engines.filter((e) => plan.engines.some((o) => o.name === e.name && o.role !== e.role));
    await Promise.all(
      changed.map((e) =>
        system
          .ref(enginePath(e.name))
          .query({ type: 'set_role', role: e.role }, 2000)
          .catch((err) => log.warn('set_role failed (the plan applies anyway)', { engine: e.name, error: err as Error })),
      ),
    );
    const old = plan;
    plan = { version: old.version + 1, engines, strategy, inFlight: 0 };
    pool.setPlanEngines(engines);
    const switchMs = performance.now() - t0;
    draining = old.inFlight > 0 ? { plan: old, since: performance.now() } : null;
    lastPlanChange = { version: plan.version, switchMs, drainMs: old.inFlight > 0 ? null : 0 };
    metrics.planVersion.set(plan.version);
    metrics.planSwitch.set(switchMs / 1000);
    log.info('plan applied', { version: plan.version, strategy: strategy.name, switchMs: +switchMs.toFixed(3), inFlightOnOldPlan: old.inFlight });
    return { version: plan.version, strategy: strategy.name, switchMs, inFlightOnOldPlan: old.inFlight };
  }

  async function ready(timeoutMs = 120_000): Promise<void> {
    const t0 = Date.now();
    while (pool.missing().length > 0) {
      if (Date.now() - t0 > timeoutMs) throw new MicroserveError('NO_ENGINE', `engines not answering status after ${timeoutMs} ms: ${pool.missing().join(', ')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  let isClosed = false;
  async function close(): Promise<void> {
    if (isClosed) return;
    isClosed = true;
    const closed = new Promise<void>((r) => server.close(() => r()));
    await runner.cancelAll();
    (server as { closeAllConnections?: () => void }).closeAllConnections?.();
    await closed;
    pool.close();
    await tokenizePool?.close();
    await grammarChecker.shutdown();
    system.stop(ROUTER_PATH);
  }

  return { url, setPlan, ready, status, close };
}
