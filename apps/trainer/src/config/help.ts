/**
 * `--help` text generated from the configuration schema: every option with its type, default and
 * description, so the help can never drift from what the parser accepts.
 */
import { presets as modelPresets } from '@switchyard/model';
import { defaultRouterConfig } from '@switchyard/routing';
import type { z } from 'zod';
import { DEFAULT_SAMPLE_OPTIONS } from '../eval/generate';
import { presets } from './load';
import { trainConfigSchema } from './schema';

/** One documented option. */
export interface OptionDoc {
  /** Dotted key, as used with `--set`. */
  readonly key: string;
  readonly type: string;
  /** The default, formatted; `-` when the option has none. */
  readonly default: string;
  readonly description: string;
}

interface Def {
  type: string;
  innerType?: z.ZodType;
  defaultValue?: unknown;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  entries?: Record<string, string>;
}

function def(s: z.ZodType): Def {
  return (s as unknown as { _zod: { def: Def } })._zod.def;
}

function typeText(s: z.ZodType): string {
  const d = def(s);
  switch (d.type) {
    case 'enum':
      return Object.values(d.entries ?? {}).join('|');
    case 'number': {
      const n = s as z.ZodNumber;
      const checks = (
        (d as { checks?: { _zod: { def: { check: string; value: number; inclusive: boolean } } }[] })
          .checks ?? []
      ).map((c) => c._zod.def);
      const lo = checks.find((c) => c.check === 'greater_than');
      const hi = checks.find((c) => c.check === 'less_than');
      const base = n.isInt ? 'int' : 'number';
      if (lo && hi && lo.inclusive && hi.inclusive) return `${base} in [${lo.value}, ${hi.value}]`;
      const parts: string[] = [];
      if (lo) parts.push(`${lo.inclusive ? '>=' : '>'} ${lo.value}`);
      if (hi) parts.push(`${hi.inclusive ? '<=' : '<'} ${hi.value}`);
      return parts.length ? `${base} ${parts.join(' and ')}` : base;
    }
    case 'array':
      return `list of ${typeText(d.element!)}`;
    case 'optional':
    case 'default':
    case 'prefault':
      return typeText(d.innerType!);
    default:
      return d.type;
  }
}

function collect(s: z.ZodType, prefix: string, out: OptionDoc[], description?: string): void {
  const d = def(s);
  const desc = description ?? s.description ?? '';
  if (d.type === 'prefault' || d.type === 'optional') {
    const inner = d.innerType!;
    if (def(inner).type === 'object') {
      collect(inner, prefix, out, desc);
      return;
    }
    out.push({
      key: prefix,
      type: typeText(inner),
      default: '-',
      description: desc || (inner.description ?? ''),
    });
    return;
  }
  if (d.type === 'object') {
    for (const [k, child] of Object.entries(d.shape!)) collect(child, prefix ? `${prefix}.${k}` : k, out);
    return;
  }
  if (d.type === 'default') {
    out.push({
      key: prefix,
      type: typeText(d.innerType!),
      default: JSON.stringify(d.defaultValue),
      description: desc,
    });
    return;
  }
  out.push({ key: prefix, type: typeText(s), default: '-', description: desc });
}

/**
 * Every configuration option with its type, default and description.
 *
 * @example
 * ```ts
 * configOptions().find((o) => o.key === 'train.steps'); // { type: 'int >= 1', default: '300', ... }
 * ```
 */
export function configOptions(): OptionDoc[] {
  const out: OptionDoc[] = [];
  collect(trainConfigSchema, '', out);
  return out.map((o) =>
    o.default === '-' && o.key.startsWith('model.') ? { ...o, default: modelDefault(o.key) } : o,
  );
}

/** The default of a `model.*` override: the value in the default model preset (`small`). */
function modelDefault(key: string): string {
  let cur: unknown = modelPresets.small;
  for (const part of key.split('.').slice(1)) {
    cur = cur !== null && typeof cur === 'object' ? (cur as Record<string, unknown>)[part] : undefined;
  }
  if (cur !== undefined) return `from the model preset (small: ${JSON.stringify(cur)})`;
  const field = key.split('.').pop()!;
  if (field === 'evalCapacityFactor') return 'the training capacity factor';
  if (field === 'normTopK') return 'on for K > 1, off for the switch router';
  const routerDefault = (defaultRouterConfig as Record<string, unknown>)[field];
  return routerDefault === undefined
    ? 'the router default'
    : `router default (${JSON.stringify(routerDefault)})`;
}

/** Escapes text for a markdown table cell: pipes, and angle brackets that would read as an HTML tag. */
function cell(text: string): string {
  return text
    .replace(/\|/g, '\\|')
    .replace(/<([^<>]*)>/g, '&lt;$1&gt;')
    .replace(/</g, '&lt;');
}

/**
 * The options as the markdown table of the trainer guide (docs/guide/trainer.md), row for row what
 * `--help` prints; a test keeps the guide's table equal to it.
 *
 * @example
 * ```ts
 * optionsTable().split('\n')[0]; // '| key | type | default | description |'
 * ```
 */
export function optionsTable(): string {
  const rows = configOptions().map((o) => {
    // model.* overrides default to prose ("from the model preset (small: 128)"), the others to a value.
    const prose = o.key.startsWith('model.') && o.key !== 'model.preset';
    const value = prose ? cell(o.default) : `\`${o.default}\``;
    return `| \`${o.key}\` | ${cell(o.type)} | ${value} | ${cell(o.description)} |`;
  });
  return ['| key | type | default | description |', '|---|---|---|---|', ...rows].join('\n');
}

/** The full `--help` text. */
export function helpText(): string {
  const options = configOptions();
  const keyWidth = Math.max(...options.map((o) => o.key.length)) + 2;
  const d = DEFAULT_SAMPLE_OPTIONS;
  const lines = [
    'switchyard-train: train Mixture-of-Experts language models.',
    '',
    'Usage:',
    '  switchyard-train [train] [--preset NAME] [--config FILE] [--set key=value ...] [--out DIR] [--resume DIR] [--ranks R] [--pipeline P --schedule K]',
    '  switchyard-train eval --checkpoint DIR --text FILE [--backend NAME]',
    '  switchyard-train generate --checkpoint DIR --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]',
    '  switchyard-train experiment NAME [--out DIR] [--set key=value ...] [--arms ID,...] [--jobs N] [--no-report]',
    '  switchyard-train compress --checkpoint DIR --groups G --rank r [--finetune-steps N] [--out DIR]  (compress --help: every flag)',
    '  switchyard-train --help | --version',
    '',
    'Commands:',
    '  train        train a model (the default command)',
    '  eval         print the mean next-token loss of a checkpoint on a text file: "loss: X tokens: N"',
    "  generate     print the prompt and the text a checkpoint's model writes after it",
    '  experiment   run a set of training runs and write a report: balance-scope, loss-free, capacity, compress',
    '  compress     write a compressed checkpoint (shared-basis low-rank experts) and its report',
    '',
    'Flags:',
    '  --preset NAME       start from a named preset (default: none, i.e. the defaults below)',
    '  --config FILE       JSON or YAML file merged over the preset',
    '  --set key=value     override one option (repeatable; values read as YAML: 3, 1e-3, true, [a, b])',
    '  --out DIR           output folder (same as --set out=DIR); must be empty or absent',
    '  --resume DIR        continue the run whose output folder (or checkpoint folder) is DIR',
    '  --backend NAME      auto|tensorflow|wasm|cpu (same as --set backend=NAME)',
    '  --ranks R           train data parallel on R worker ranks of this machine (train.microBatchSize',
    '                      sequences per micro-batch are split between them; rank 0 writes the output)',
    '  --pipeline P        pipeline parallelism: cut the model into stages over P ranks of each pipeline',
    '                      (same as --set parallel.pipeline=P); --ranks must be a multiple of P',
    '  --schedule K        gpipe|1f1b|interleaved|zb|dualpipe|dualpipev (same as --set parallel.schedule=K)',
    '  --nnodes N          number of nodes of a multi-node run (one switchyard-train per node)',
    "  --node-rank K       this node's index in [0, N); node 0 hosts the rendezvous",
    '  --master HOST:PORT  rendezvous address of node 0 (needed when N > 1)',
    '  --host H            address this node advertises to the others',
    '  --collective-timeout MS  how long a rank waits for its peers in a collective (default 60000)',
    '  --expert-parallel P experts sharded over groups of P ranks (same as --set parallel.expertParallel=P;',
    '                      with --resume: continue under this layout)',
    '                      Under srun or a Kubernetes indexed Job, --nnodes, --node-rank and --master come',
    '                      from the environment (see the parallelism guide); flags still win',
    '  --checkpoint DIR    (eval) checkpoint folder',
    '  --text FILE         (eval) text file to score',
    '  --prompt TEXT       (generate) text the model continues',
    `  --max-tokens N      (generate) most new tokens (default ${d.maxTokens}); generation also ends at the`,
    "                      end-of-text token and at the model's context length (model.maxSeqLen)",
    `  --temperature T     (generate) softmax temperature (default ${d.temperature}); 0 always takes the likeliest token`,
    `  --top-k K           (generate) sample among the K likeliest tokens (default ${d.topK}; 0: all)`,
    `  --top-p P           (generate) nucleus sampling: the likeliest tokens up to probability P (default ${d.topP})`,
    `  --seed S            (generate) seed of the sampler (default ${d.seed}): the same seed gives the same text`,
    '  --arms ID,...       (experiment) run only these arms (default: all); the report is written once',
    '                      every arm in --out has finished',
    '  --jobs N            (experiment) arms trained at once, each in its own process (default 1)',
    '  --no-report         (experiment) train the arms without writing the comparison report',
    '  -h, --help          this text',
    '  --version           print the version',
    '',
    'Presets:',
    ...Object.entries(presets()).map(([name, p]) => `  ${name.padEnd(10)} ${String(p.description ?? '')}`),
    '',
    'Options (config keys; defaults apply when neither preset, file nor --set gives a value):',
    ...options.map(
      (o) =>
        `  ${o.key.padEnd(keyWidth)}${o.description}\n  ${' '.repeat(keyWidth)}type: ${o.type}; default: ${o.default}`,
    ),
  ];
  return lines.join('\n');
}
