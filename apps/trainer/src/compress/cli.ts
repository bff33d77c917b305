/**
 * The `compress` subcommand's command line:
 * `switchyard-train compress --checkpoint DIR --groups G --rank r [--finetune-steps N] [--out DIR]`
 * and its other flags. Usage errors are one line and exit code 2.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';

type ParseArgsOptionsConfig = NonNullable<ParseArgsConfig['options']>;

import { DEFAULT_LAMBDA } from '@switchyard/compress';
import { initBackend, isSwitchyardError, SwitchyardError } from '@switchyard/tensor';
import { reportFailure } from '../failure';
import { createReporter, type TextSink } from '../reporter';
import { timestamp } from '../run/outdir';
import { runCompress } from './command';
import { runCompressExperiment } from './experiment';

/** Help text of `switchyard-train compress`. */
export const COMPRESS_HELP = `switchyard-train compress --checkpoint DIR --groups G --rank r [options]

Clusters the experts of every MoE layer of a trained checkpoint into G groups and stores each group
as a shared basis plus a rank-r residual per expert; evaluates before and after (and after
fine-tuning), and writes OUT/checkpoint (a compressed checkpoint), OUT/report.md and OUT/report.json.

  --checkpoint DIR        trained checkpoint folder (required)
  --groups G              groups per MoE layer, 1 <= G <= E (required)
  --rank r                rank of each expert's residual, 1 <= r <= min(dModel, expert dFF) (required)
  --finetune-steps N      fine-tune the compressed model for N steps (default 0)
  --finetune-lr LR        peak learning rate of the fine-tuning (default 3e-4)
  --out DIR               output folder (default runs/compress-g<G>-r<r>-<time>)
  --lambda X              structural weight of the fused similarity in [0, 1] (default ${DEFAULT_LAMBDA})
  --free-size             groups of any size (default: E / G experts each)
  --two-level K           two-level routing: keep K groups per token, then pick experts inside them
  --init svd|scratch      factors from the SVD of the trained experts (default) or random, to fine-tune
  --calibration-batches N training micro-batches for the activation centroids (default 8)
  --backend NAME          auto, tensorflow, wasm or cpu
`;

/** Help text of `switchyard-train experiment compress`. */
export const COMPRESS_EXPERIMENT_HELP = `switchyard-train experiment compress [--checkpoint DIR] [options]

Validation loss against the compression ratio of the routed experts, over G and r: shared-basis
low-rank experts clustered by fused (lambda ${DEFAULT_LAMBDA}), structural-only and functional-only similarity,
against experts merged by averaging and per-expert low rank without a shared basis at the same
parameter count. Writes OUT/results.json, OUT/report.md and OUT/plots/loss-vs-ratio.svg.

  --checkpoint DIR        trained checkpoint (default: train the default model into OUT/base first)
  --out DIR               output folder (default runs/experiments/compress-<time>)
  --groups LIST           comma-separated G values, each dividing E (default 2,4)
  --ranks LIST            comma-separated r values (default 4,16)
  --calibration-batches N training micro-batches for the activation centroids (default 8)
  --backend NAME          auto, tensorflow, wasm or cpu
`;

function usage(message: string, command = 'compress'): SwitchyardError {
  return new SwitchyardError('INVALID_ARGUMENT', `${message} (see switchyard-train ${command} --help)`);
}

function listFlag(name: string, raw: string | undefined, fallback: number[]): number[] {
  if (raw === undefined) return fallback;
  const v = raw.split(',').map((x) => Number(x.trim()));
  if (v.length === 0 || v.some((x) => !Number.isInteger(x) || x < 1))
    throw usage(
      `--${name}: expected a comma-separated list of integers >= 1, got ${JSON.stringify(raw)}`,
      'experiment compress',
    );
  return v;
}

/**
 * Runs `switchyard-train experiment compress` with `argv` (the arguments after it); returns the exit code.
 *
 * @example
 * ```ts
 * await compressExperimentMain(['--checkpoint', 'runs/a/checkpoints/final', '--ranks', '4'], io);
 * ```
 */
export async function compressExperimentMain(
  argv: readonly string[],
  io: { readonly stdout: TextSink; readonly stderr: TextSink },
): Promise<number> {
  return reportErrors(io, async () => {
    const values = parseFlags(argv, EXPERIMENT_FLAGS, 'experiment compress');
    if (values.help) {
      io.stdout.write(COMPRESS_EXPERIMENT_HELP);
      return 0;
    }
    await initBackendFlag(values.backend);
    const result = await runCompressExperiment({
      ...(values.checkpoint !== undefined ? { checkpoint: values.checkpoint } : {}),
      out: values.out ?? `runs/experiments/compress-${timestamp()}`,
      groups: listFlag('groups', values.groups, [2, 4]),
      ranks: listFlag('ranks', values.ranks, [4, 16]),
      calibrationBatches: intFlag('calibration-batches', values['calibration-batches'], 1, 8),
      reporter: createReporter({ mode: 'lines', every: 25, stdout: io.stdout, stderr: io.stderr }),
    });
    io.stdout.write(`results: ${result.arms.length} arms\n`);
    return 0;
  });
}

async function initBackendFlag(raw: string | undefined): Promise<void> {
  const backend = raw ?? 'auto';
  if (!['auto', 'tensorflow', 'wasm', 'cpu'].includes(backend))
    throw usage(`--backend: expected auto, tensorflow, wasm or cpu, got ${JSON.stringify(backend)}`);
  await initBackend(backend === 'auto' ? {} : { backend: backend as 'wasm' });
}

/** Runs `job`, turning errors into one line on stderr and an exit code (2 for usage and configuration errors). */
async function reportErrors(io: { readonly stderr: TextSink }, job: () => Promise<number>): Promise<number> {
  try {
    return await job();
  } catch (e) {
    return reportFailure(e, io.stderr);
  }
}

function intFlag(name: string, raw: string | undefined, min: number, fallback?: number): number {
  if (raw === undefined) {
    if (fallback === undefined) throw usage(`compress needs --${name}`);
    return fallback;
  }
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min)
    throw usage(`--${name}: expected an integer >= ${min}, got ${JSON.stringify(raw)}`);
  return v;
}

function numberFlag(name: string, raw: string | undefined, lo: number, hi: number, fallback: number): number {
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v) || v < lo || v > hi)
    throw usage(`--${name}: expected a number in [${lo}, ${hi}], got ${JSON.stringify(raw)}`);
  return v;
}

/**
 * Runs `switchyard-train compress` with `argv` (the arguments after `compress`) and returns the exit
 * code: 0 done, 2 usage or configuration errors, 1 anything else.
 *
 * @example
 * ```ts
 * await compressMain(['--checkpoint', 'runs/a/checkpoints/final', '--groups', '2', '--rank', '16'], io);
 * ```
 */
export async function compressMain(
  argv: readonly string[],
  io: { readonly stdout: TextSink; readonly stderr: TextSink },
): Promise<number> {
  return reportErrors(io, async () => {
    const values = parseFlags(argv, COMPRESS_FLAGS, 'compress');
    if (values.help) {
      io.stdout.write(COMPRESS_HELP);
      return 0;
    }
    if (!values.checkpoint) throw usage('compress needs --checkpoint DIR');
    const groups = intFlag('groups', values.groups, 1);
    const rank = intFlag('rank', values.rank, 1);
    const init = values.init ?? 'svd';
    if (init !== 'svd' && init !== 'scratch')
      throw usage(`--init: expected svd or scratch, got ${JSON.stringify(init)}`);
    await initBackendFlag(values.backend);
    const reporter = createReporter({ mode: 'lines', every: 10, stdout: io.stdout, stderr: io.stderr });
    const report = await runCompress({
      checkpoint: values.checkpoint,
      groups,
      rank,
      finetuneSteps: intFlag('finetune-steps', values['finetune-steps'], 0, 0),
      finetuneLr: numberFlag('finetune-lr', values['finetune-lr'], 1e-8, 1, 3e-4),
      out: values.out ?? `runs/compress-g${groups}-r${rank}-${timestamp()}`,
      lambda: numberFlag('lambda', values.lambda, 0, 1, DEFAULT_LAMBDA),
      equalSize: values['free-size'] !== true,
      init,
      twoLevelGroupTopK:
        values['two-level'] === undefined ? null : intFlag('two-level', values['two-level'], 1),
      calibrationBatches: intFlag('calibration-batches', values['calibration-batches'], 1, 8),
      reporter,
    });
    io.stdout.write(`compressed checkpoint: ${report.compressedCheckpoint}\n`);
    return 0;
  });
}

const COMPRESS_FLAGS = {
  checkpoint: { type: 'string' },
  groups: { type: 'string' },
  rank: { type: 'string' },
  'finetune-steps': { type: 'string' },
  'finetune-lr': { type: 'string' },
  out: { type: 'string' },
  lambda: { type: 'string' },
  'free-size': { type: 'boolean' },
  'two-level': { type: 'string' },
  init: { type: 'string' },
  'calibration-batches': { type: 'string' },
  backend: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsOptionsConfig;

const EXPERIMENT_FLAGS = {
  checkpoint: { type: 'string' },
  out: { type: 'string' },
  groups: { type: 'string' },
  ranks: { type: 'string' },
  'calibration-batches': { type: 'string' },
  backend: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsOptionsConfig;

/** The flags of `argv` (no positional arguments allowed); parse errors become usage errors of `command`. */
function parseFlags<const O extends ParseArgsOptionsConfig>(
  argv: readonly string[],
  options: O,
  command: string,
) {
  try {
    const parsed = parseArgs({ args: [...argv], allowPositionals: true, strict: true, options });
    if (parsed.positionals.length > 0)
      throw usage(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`, command);
    return parsed.values;
  } catch (e) {
    if (isSwitchyardError(e)) throw e;
    throw usage((e as Error).message, command);
  }
}
