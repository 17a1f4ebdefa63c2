import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { resolve } from 'node:path';
import { MicroserveError } from '../../common/errors.ts';
import { setLogProcessName } from '../../common/log.ts';
import { OWN_BODY_FIELDS } from '../../bench/runner/client.ts';
import { parseGoodput } from '../../bench/runner/metrics.ts';
import { renderMarkdown } from '../../bench/runner/report-md.ts';
import { DATASETS, DEFAULT_TOPOLOGY, runBench, type BenchOptions } from '../../bench/runner/run.ts';
import { parseStrategies } from '../../bench/runner/strategies.ts';

const int = (name: string, min = 0) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
  return n;
};
const num = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number`);
  return n;
};
const rates = (v: string) =>
  v.split(',').map((x) => {
    const s = x.trim().toLowerCase();
    const r = s === 'inf' ? Infinity : Number(s);
    if (!(r > 0)) throw new InvalidArgumentError(`--request-rate: '${x}' is not a positive number or inf`);
    return r;
  });
const wrap = <T>(f: (v: string) => T) => (v: string) => {
  try {
    return f(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
};

/** `--extra-body`: a JSON object added to every request, refused if it is no object or names a field the bench sets. */
function extraBody(v: string): Record<string, unknown> {
  let body: unknown;
  try {
    body = JSON.parse(v);
  } catch (e) {
    throw new InvalidArgumentError(`--extra-body is not JSON: ${(e as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new InvalidArgumentError('--extra-body must be a JSON object');
  const own = OWN_BODY_FIELDS.find((f) => f in body);
  if (own) throw new InvalidArgumentError(`--extra-body may not set '${own}' (the bench sets ${OWN_BODY_FIELDS.join(', ')})`);
  return body as Record<string, unknown>;
}

function goodput(args: string[]) {
  try {
    return parseGoodput(args);
  } catch (e) {
    throw new MicroserveError('BAD_CONFIG', (e as Error).message, { field: 'goodput' });
  }
}

export function register(program: Command): void {
  program
    .command('bench')
    .description('benchmark serving strategies side by side (flags as in `vllm bench serve`): Poisson arrivals, client-side TTFT/TPOT/ITL/E2EL, JSON + Markdown + HTML report')
    .option('--base-url <url>', 'router of a running cluster (e.g. http://127.0.0.1:8000); without it the bench starts --topology itself')
    .option('--topology <file>', 'topology the bench starts with `microserve up` and stops at the end (default: topology/default.yaml)')
    .option('--control <url>', 'control-plane URL of the running cluster (to switch strategies); default: the run file of `up`')
    .option('--keep-ports', "a cluster the bench starts listens on the topology's ports (default: free ports)")
    .option('--api-key <key>', 'API key for the router (default: the topology router.apiKey, else OPENAI_API_KEY)')
    .option('--model <id>', 'model id to request (default: what /v1/models lists)')
    .option('--dataset-name <name>', `workload: ${DATASETS.join(', ')}`, 'random')
    .option('--dataset-path <file>', 'ShareGPT JSON file for --dataset-name sharegpt')
    .option('--random-input-len <n>', 'random: input tokens', int('--random-input-len', 1), 1024)
    .option('--random-output-len <n>', 'random: output tokens', int('--random-output-len', 1), 128)
    .option('--random-range-ratio <r>', 'random: lengths vary uniformly by ± this share', num('--random-range-ratio'), 0)
    .option('--random-input-range <n>', 'random: input varies by ± n tokens (overrides the ratio for input)', int('--random-input-range'))
    .option('--random-output-range <n>', 'random: output varies by ± n tokens (overrides the ratio for output)', int('--random-output-range'))
    .option('--gsp-num-groups <n>', 'shared-prefix: number of common prefixes', int('--gsp-num-groups', 1), 4)
    .option('--gsp-system-prompt-len <n>', 'shared-prefix: prefix tokens', int('--gsp-system-prompt-len', 1), 2048)
    .option('--gsp-question-len <n>', 'shared-prefix: per-request tokens after the prefix', int('--gsp-question-len', 1), 128)
    .option('--gsp-output-len <n>', 'shared-prefix: output tokens', int('--gsp-output-len', 1), 256)
    .option('--sharegpt-output-len <n>', "sharegpt: fixed output length instead of the reply's", int('--sharegpt-output-len', 1))
    .option('--token-id-max <n>', "prompt token ids are drawn from [0, n) (default: the served model's ordinary tokens, from /v1/models; at most its vocabulary)", int('--token-id-max', 2))
    .option('--request-rate <rates>', 'Poisson arrival rate(s) in req/s, comma list to sweep, inf = all at once (default: inf)', rates)
    .option('--max-concurrency <n>', 'at most this many requests in flight', int('--max-concurrency', 1))
    .option('--num-prompts <n>', 'requests per point', int('--num-prompts', 1), 100)
    .option('--num-warmups <n>', 'warm-up requests before each strategy (excluded from the metrics)', int('--num-warmups'), 0)
    .option('--seed <n>', 'seed of the prompts, lengths and arrival times', int('--seed'), 0)
    .option('--strategies <list>', 'strategies to compare on the same trace, e.g. dp,pd,balanced-pd:0.1 (default: the running one)', wrap(parseStrategies))
    .option('--goodput <slo...>', 'SLOs for goodput, KEY:MS with KEY ttft, tpot or e2el (e.g. --goodput ttft:500 e2el:4000)')
    .option('--result-dir <dir>', 'write results.json, results.md and report.html here (after every point)')
    .option('--resume', 'skip the points already in <result-dir>/results.json (same trace required)')
    .option('--request-timeout <s>', 'per-request timeout in seconds', int('--request-timeout', 1), 600)
    .option('--extra-body <json>', 'JSON object added to every request body, e.g. \'{"response_format":{"type":"json_object"}}\' (structured outputs under load) or \'{"temperature":0.8}\'', extraBody)
    .option('--flush-caches', "empty the engines' prefix caches before each strategy (always done on a cluster the bench starts; on a running one only with this flag)")
    .option('--no-progress', 'no progress bar')
    .action(async (o: Record<string, any>) => {
      setLogProcessName('bench');
      const opts: BenchOptions = {
        baseUrl: o.baseUrl,
        topology: o.baseUrl ? undefined : o.topology ? resolve(o.topology) : DEFAULT_TOPOLOGY,
        control: o.control,
        keepPorts: !!o.keepPorts,
        apiKey: o.apiKey ?? (o.baseUrl ? process.env.OPENAI_API_KEY : undefined),
        model: o.model,
        datasetName: o.datasetName,
        datasetPath: o.datasetPath,
        randomInputLen: o.randomInputLen,
        randomOutputLen: o.randomOutputLen,
        randomRangeRatio: o.randomRangeRatio,
        randomInputRange: o.randomInputRange,
        randomOutputRange: o.randomOutputRange,
        gspNumGroups: o.gspNumGroups,
        gspSystemPromptLen: o.gspSystemPromptLen,
        gspQuestionLen: o.gspQuestionLen,
        gspOutputLen: o.gspOutputLen,
        sharegptOutputLen: o.sharegptOutputLen,
        tokenIdMax: o.tokenIdMax,
        numPrompts: o.numPrompts,
        numWarmups: o.numWarmups,
        seed: o.seed,
        requestRates: o.requestRate ?? [Infinity],
        maxConcurrency: o.maxConcurrency ?? null,
        strategies: o.strategies ?? [],
        goodput: o.goodput ? goodput(o.goodput) : null,
        resultDir: o.resultDir ? resolve(o.resultDir) : undefined,
        resume: !!o.resume,
        requestTimeoutMs: o.requestTimeout * 1000,
        ...(o.extraBody ? { extraBody: o.extraBody } : {}),
        isProgress: o.progress,
        ...(o.flushCaches ? { flushCaches: true } : {}),
      };
      if (!(DATASETS as readonly string[]).includes(opts.datasetName)) throw new MicroserveError('BAD_CONFIG', `--dataset-name must be one of ${DATASETS.join(', ')}`);
      if (opts.resume && !opts.resultDir) throw new MicroserveError('BAD_CONFIG', '--resume needs --result-dir');
      const results = await runBench(opts, (line) => process.stderr.write(`${line}\n`));
      process.stdout.write(renderMarkdown(results));
      if (opts.resultDir) process.stdout.write(`\nwrote ${opts.resultDir}/results.json, results.md, report.html\n`);
    });
}
