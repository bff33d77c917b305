/**
 * The command-line flags of `switchyard-serve`, documented once: the parser, `--help` and the
 * serving guide all read this table.
 */
import { defaultServeConfig, type ServeConfig } from './server';

/** One flag: its name, value kind, default and what it does. */
export interface FlagDoc {
  readonly flag: string;
  /** `string`, `int`, `number` or `boolean` (no value). */
  readonly kind: 'string' | 'int' | 'number' | 'boolean';
  /** Placeholder of the value in usage lines. */
  readonly value: string;
  /** The default, as shown; `-` when there is none. */
  readonly default: string;
  readonly description: string;
  /** Smallest accepted value of a numeric flag. */
  readonly min?: number;
  /** The serve setting it fills. */
  readonly key?: keyof ServeConfig;
}

const d = defaultServeConfig;

/** Flags of the server (the default command). */
export const SERVE_FLAGS: readonly FlagDoc[] = [
  {
    flag: 'checkpoint',
    kind: 'string',
    value: 'DIR',
    default: '-',
    description: 'Checkpoint folder to serve (required)',
  },
  {
    flag: 'host',
    kind: 'string',
    value: 'HOST',
    default: d.host,
    description: 'Interface to bind',
    key: 'host',
  },
  {
    flag: 'port',
    kind: 'int',
    value: 'PORT',
    default: String(d.port),
    description: 'Port to bind (0: any free port)',
    min: 0,
    key: 'port',
  },
  {
    flag: 'api-key',
    kind: 'string',
    value: 'KEY',
    default: '-',
    description: 'Require `Authorization: Bearer KEY` on /v1/* (default: $SWITCHYARD_API_KEY, else no key)',
    key: 'apiKey',
  },
  {
    flag: 'model-name',
    kind: 'string',
    value: 'NAME',
    default: '-',
    description: 'Model id clients send in `model` (default: the checkpoint folder name)',
    key: 'modelName',
  },
  {
    flag: 'max-batch',
    kind: 'int',
    value: 'N',
    default: String(d.maxBatch),
    description: 'Most sequences in the running batch',
    min: 1,
    key: 'maxBatch',
  },
  {
    flag: 'kv-budget-mb',
    kind: 'number',
    value: 'MB',
    default: String(d.kvBudgetMb),
    description: 'KV-cache memory the running sequences may reserve (prompt + max tokens each), MiB',
    min: 0,
    key: 'kvBudgetMb',
  },
  {
    flag: 'max-waiting',
    kind: 'int',
    value: 'N',
    default: String(d.maxWaiting),
    description: 'Most sequences queued for the batch; a request beyond it gets 429 with Retry-After',
    min: 0,
    key: 'maxWaiting',
  },
  {
    flag: 'prefill-chunk',
    kind: 'int',
    value: 'N',
    default: String(d.prefillChunk),
    description: 'Most prompt tokens prefilled per step, so long prompts do not stall decoding',
    min: 1,
    key: 'prefillChunk',
  },
  {
    flag: 'max-tokens',
    kind: 'int',
    value: 'N',
    default: '-',
    description: "Most tokens one request may ask for (default: the model's maxSeqLen)",
    min: 1,
    key: 'maxTokens',
  },
  {
    flag: 'max-body-kb',
    kind: 'number',
    value: 'KB',
    default: String(d.maxBodyKb),
    description: 'Largest request body, KiB (larger: 413)',
    min: 1,
    key: 'maxBodyKb',
  },
  {
    flag: 'drain-timeout-s',
    kind: 'number',
    value: 'S',
    default: String(d.drainTimeoutS),
    description: 'On SIGTERM/SIGINT, seconds to let running requests finish before cancelling them',
    min: 0,
    key: 'drainTimeoutS',
  },
  {
    flag: 'retry-after-s',
    kind: 'int',
    value: 'S',
    default: String(d.retryAfterS),
    description: 'Retry-After of a 429',
    min: 0,
    key: 'retryAfterS',
  },
  {
    flag: 'backend',
    kind: 'string',
    value: 'NAME',
    default: 'auto',
    description: 'TensorFlow.js backend: tensorflow, wasm or cpu (default: the fastest that loads)',
  },
];

/** Flags of `switchyard-serve generate`. */
export const GENERATE_FLAGS: readonly FlagDoc[] = [
  {
    flag: 'checkpoint',
    kind: 'string',
    value: 'DIR',
    default: '-',
    description: 'Checkpoint folder (required)',
  },
  { flag: 'prompt', kind: 'string', value: 'TEXT', default: '-', description: 'Text to continue (required)' },
  {
    flag: 'max-tokens',
    kind: 'int',
    value: 'N',
    default: '64',
    description: 'Most tokens to generate (at most what the context leaves)',
    min: 1,
  },
  {
    flag: 'temperature',
    kind: 'number',
    value: 'T',
    default: '1',
    description: 'Sampling temperature; 0 is greedy',
    min: 0,
  },
  {
    flag: 'top-p',
    kind: 'number',
    value: 'P',
    default: '1',
    description: 'Nucleus sampling: the smallest set of tokens with probability >= P',
  },
  {
    flag: 'top-k',
    kind: 'int',
    value: 'K',
    default: '0',
    description: 'Sample among the K most likely tokens (0: all)',
    min: 0,
  },
  {
    flag: 'seed',
    kind: 'int',
    value: 'S',
    default: '0',
    description: 'Seed of the sampler (the same seed gives the same text)',
  },
  {
    flag: 'backend',
    kind: 'string',
    value: 'NAME',
    default: 'auto',
    description: 'TensorFlow.js backend: tensorflow, wasm or cpu',
  },
];

function usageLine(name: string, flags: readonly FlagDoc[]): string {
  return `${name} ${flags.map((f) => (f.default === '-' && f.key === undefined ? `--${f.flag} ${f.value}` : `[--${f.flag} ${f.value}]`)).join(' ')}`;
}

function table(flags: readonly FlagDoc[]): string {
  return flags
    .map((f) => {
      const left = `  --${f.flag} ${f.value}`;
      const def = f.default === '-' ? '' : ` (default ${f.default})`;
      return `${left.padEnd(26)}${f.description}${def}`;
    })
    .join('\n');
}

/** The `--help` text. */
export function helpText(): string {
  return `switchyard-serve: an OpenAI-compatible HTTP server for Switchyard MoE checkpoints.

Usage:
  ${usageLine('switchyard-serve', SERVE_FLAGS)}
  ${usageLine('switchyard-serve generate', GENERATE_FLAGS)}
  switchyard-serve --version
  switchyard-serve --help

Serving (POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /v1/experts,
GET /health, GET /metrics):
${table(SERVE_FLAGS)}

generate (prints the continuation of --prompt and exits):
${table(GENERATE_FLAGS)}

Exit codes: 0 on success (also after SIGTERM/SIGINT once running requests are drained), 2 for a
usage error, 1 for anything else.`;
}
