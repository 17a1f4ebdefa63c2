/**
 * `microserve generate`: one engine in this process (no actors), one request.
 * Prints the generated text as it comes (the ids when the model has no tokenizer), or with
 * `--json` one line `{"ids":[generated ids],"text":...}` (`text: null` without a tokenizer).
 * Generation stops at the model's EOS ids unless `--ignore-eos`; with it (or a model without
 * EOS ids), `--temperature 0` generates exactly `--max-tokens` tokens.
 */
import type { Command } from 'commander';
import { EngineCore } from '../../actors/engine/engine-core.ts';
import { MicroserveError } from '../../common/errors.ts';
import { setLogLevel } from '../../common/log.ts';
import type { TokensItem } from '../../actors/messages.ts';
import { loadTokenizer } from '../../actors/text/loader.ts';
import type { Tokenizer } from '../../actors/text/tokenizer.ts';
import { openModel } from '../../native/index.ts';
import { resolveModelSource } from '../../native/model-source.ts';
import { envIsSet } from '../../common/env.ts';

/** The model `generate` serves without --model: the trained model shipped with microserve. */
export const DEFAULT_MODEL = 'kjv-chat';

interface GenerateOpts {
  /** [model=DEFAULT_MODEL] preset, shipped model or checkpoint folder. */
  model?: string;
  prompt?: string;
  promptIds?: string;
  maxTokens: string;
  temperature: string;
  topP: string;
  seed?: string;
  json?: boolean;
  /** Send --prompt as one user message through the model's chat template. */
  chat?: boolean;
  ignoreEos?: boolean;
  device: string;
  threads: string;
  kvPages?: string;
  pageSize: string;
}

function num(v: string, field: string, opts: { int?: boolean; min?: number; max?: number } = {}): number {
  const x = Number(v);
  const ok = v.trim() !== '' && Number.isFinite(x) && (!opts.int || Number.isInteger(x)) && x >= (opts.min ?? -Infinity) && x <= (opts.max ?? Infinity);
  if (!ok) throw new MicroserveError('BAD_REQUEST', `--${field} must be ${opts.int ? 'an integer' : 'a number'}${opts.min !== undefined ? ` >= ${opts.min}` : ''} (got '${v}')`, { field });
  return x;
}

function parseIds(s: string): number[] {
  const parts = s.split(',').map((p) => p.trim());
  return parts.map((p, i) => {
    if (!/^\d+$/.test(p)) throw new MicroserveError('BAD_REQUEST', `--prompt-ids: item ${i} ('${p}') is not a token id`, { field: 'prompt-ids' });
    return Number(p);
  });
}

/**
 * Runs one request. `out` gets the generated text (or JSON); `note` gets remarks for a person
 * (the random-weights warning) [default: dropped].
 */
export async function runGenerate(o: GenerateOpts, out: (s: string) => void, note: (s: string) => void = () => {}): Promise<{ ids: number[]; text: string | null }> {
  if ((o.prompt === undefined) === (o.promptIds === undefined)) throw new MicroserveError('BAD_REQUEST', 'give exactly one of --prompt TEXT or --prompt-ids 1,2,3');
  const maxTokens = num(o.maxTokens, 'max-tokens', { int: true, min: 0 });
  const temperature = num(o.temperature, 'temperature', { min: 0 });
  const topP = num(o.topP, 'top-p', { min: Number.MIN_VALUE, max: 1 });
  const seed = o.seed === undefined ? undefined : num(o.seed, 'seed', { int: true, min: 0, max: 0xffffffff });
  const pageSize = num(o.pageSize, 'page-size', { int: true, min: 1 });
  const promptIdsGiven = o.promptIds === undefined ? null : parseIds(o.promptIds);
  const tokenDemand = (promptIdsGiven?.length ?? (o.prompt?.length ?? 0) * 2 + 8) + maxTokens;
  const kvPages = o.kvPages !== undefined ? num(o.kvPages, 'kv-pages', { int: true, min: 1 }) : Math.max(64, Math.ceil(tokenDemand / pageSize) + 1);

  const model = o.model ?? DEFAULT_MODEL;
  const source = resolveModelSource(model);
  if (source.isRandom) note(`note: model '${source.name}' has random weights (a shape preset): its text is not language\n`);
  const loaded = await openModel(model, { device: o.device, numPages: kvPages, pageSize, numThreads: num(o.threads, 'threads', { int: true, min: 0 }) });
  try {
    const tok: Tokenizer | null = await loadTokenizer(loaded);
    let promptIds: number[];
    if (promptIdsGiven) promptIds = promptIdsGiven;
    else if (!tok) throw new MicroserveError('NO_TOKENIZER', `model '${loaded.name}' has no tokenizer: use --prompt-ids`);
    else promptIds = o.chat ? tok.applyChatTemplate([{ role: 'user', content: o.prompt! }]) : tok.encode(o.prompt!);

    const ids: number[] = [];
    const decoder = !o.json && tok ? tok.createStreamDecoder() : null;
    let settle!: (m: TokensItem) => void;
    const finished = new Promise<TokensItem>((r) => (settle = r));
    const core = new EngineCore({
      name: 'cli',
      backend: loaded.backend,
      model: loaded.name,
      maxBatchTokens: 512,
      sink: (_replyTo, items) => {
        for (const msg of items) {
          ids.push(...msg.tokens);
          if (decoder) out(decoder.push(msg.tokens));
          if (msg.finish) settle(msg);
        }
      },
    });
    const stopTokenIds = o.ignoreEos ? [] : (tok?.eosTokenIds ?? loaded.config.eosTokenIds);
    core.generate({ id: 'cli-0', promptIds, sampling: { maxTokens, temperature, topP, seed, stopTokenIds }, replyTo: '' });
    const end = await finished;
    core.close();
    if (end.error) throw new MicroserveError(end.error.code as any, end.error.message);
    if (decoder) out(decoder.flush() + '\n');
    const text = tok ? tok.decode(ids, { skipSpecialTokens: true }) : null;
    if (o.json) out(JSON.stringify({ ids, text }) + '\n');
    else if (!tok) out(ids.join(' ') + '\n');
    return { ids, text };
  } finally {
    loaded.backend.close();
  }
}

export function register(program: Command): void {
  program
    .command('generate')
    .description('generate from one prompt with one in-process engine')
    .option('--model <preset|folder>', 'a shipped model (kjv-chat: trained weights), a preset name (tiny, llama-3.1-8b: random weights) or a Hugging Face checkpoint folder', DEFAULT_MODEL)
    .option('--prompt <text>', 'prompt text (needs a model with a tokenizer)')
    .option('--prompt-ids <ids>', 'prompt token ids, comma-separated')
    .option('--max-tokens <n>', 'tokens to generate at most', '32')
    .option('--temperature <t>', '0 = greedy', '0')
    .option('--top-p <p>', 'nucleus sampling mass', '1')
    .option('--seed <s>', 'sampling seed')
    .option('--chat', 'send --prompt as one user message through the model\'s chat template')
    .option('--ignore-eos', 'do not stop at the model\'s end-of-sequence tokens')
    .option('--json', 'print one line {"ids":[...],"text":...}')
    .option('--device <d>', "'cpu' or 'cuda:N'", 'cpu')
    .option('--threads <n>', 'CPU threads, 0 = all cores', '0')
    .option('--kv-pages <n>', 'KV pool pages (default: enough for the request)')
    .option('--page-size <n>', 'tokens per KV page', '16')
    .action(async (o: GenerateOpts) => {
      if (!envIsSet('logLevel')) setLogLevel('warn');
      await runGenerate(o, (s) => process.stdout.write(s), (s) => process.stderr.write(s));
    });
}
