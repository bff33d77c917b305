/**
 * The `switchyard-train` command line: `train` (default), `eval` and `experiment`. Parses flags,
 * resolves the configuration, runs the job and turns errors into one clear line and an exit code
 * (2 for usage and configuration errors, 1 for everything else).
 */
import { parseArgs } from 'node:util';
import { type LaunchConfig, launch, parseLaunchArgs } from '@switchyard/parallel';
import { initBackend, isSwitchyardError, SwitchyardError } from '@switchyard/tensor';
import { compressExperimentMain, compressMain } from './compress/cli';
import { helpText } from './config/help';
import { resolveConfig } from './config/load';
import { evaluateCheckpoint } from './eval/score';
import { EXPERIMENTS, runExperiment } from './experiments/run';
import { RANK_MODULE_URL, type TrainRankArgs } from './rank';
import { createReporter, type TextSink } from './reporter';
import { checkOutDirFree, defaultOutDir } from './run/outdir';
import { type TrainResult, train } from './train/trainer';

/** Streams the CLI writes to (process streams by default; tests pass collectors). */
export interface CliIO {
  readonly stdout: TextSink;
  readonly stderr: TextSink;
}

const COMMANDS = ['train', 'eval', 'experiment'] as const;

function usage(message: string): SwitchyardError {
  return new SwitchyardError('INVALID_ARGUMENT', `${message} (see switchyard-train --help)`);
}

/**
 * Runs the CLI with `argv` (without `node` and the script) and returns the exit code.
 *
 * When to use: the `switchyard-train` binary calls it; tests call it in-process.
 *
 * @example
 * ```ts
 * const code = await main(['--preset', 'tiny', '--set', 'train.steps=5']);
 * ```
 */
export async function main(
  argv: readonly string[],
  io: CliIO = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  if (argv[0] === 'compress') return compressMain(argv.slice(1), io);
  if (argv[0] === 'experiment' && argv[1] === 'compress') return compressExperimentMain(argv.slice(2), io);
  try {
    let parsed: ReturnType<typeof parse>;
    let lc: Partial<LaunchConfig>;
    try {
      const launchArgs = parseLaunchArgs(argv);
      lc = launchArgs.config;
      parsed = parse(launchArgs.rest);
    } catch (e) {
      if (isSwitchyardError(e)) throw e;
      throw usage((e as Error).message);
    }
    const { values, positionals } = parsed;
    if (values.help) {
      io.stdout.write(`${helpText()}\n`);
      return 0;
    }
    const first = positionals[0];
    const command = (COMMANDS as readonly string[]).includes(first ?? '')
      ? (first as (typeof COMMANDS)[number])
      : 'train';
    const rest = command === first ? positionals.slice(1) : positionals;
    const parallel = (lc.ranks ?? 1) > 1 || (lc.nnodes ?? 1) > 1;
    if (command !== 'train' && Object.keys(lc).length > 0) {
      throw usage(`--ranks, --nnodes, --node-rank and --master apply to training only, not to ${command}`);
    }

    if (
      command !== 'experiment' &&
      (values.arms !== undefined || values.jobs !== undefined || values['no-report'] !== undefined)
    ) {
      throw usage(`--arms, --jobs and --no-report apply to experiment only, not to ${command}`);
    }

    if (command === 'eval') {
      if (rest.length > 0) throw usage(`eval takes no positional arguments, got ${rest.join(' ')}`);
      if (!values.checkpoint || !values.text) throw usage('eval needs --checkpoint DIR and --text FILE');
      await initBackend(values.backend ? { backend: values.backend as 'wasm' } : {});
      const r = await evaluateCheckpoint(values.checkpoint, values.text);
      io.stdout.write(`loss: ${r.loss.toFixed(6)} tokens: ${r.predicted}\n`);
      return 0;
    }

    const sets = [...(values.set ?? [])];
    if (values.out !== undefined) sets.push(`out=${values.out}`);
    if (values.backend !== undefined) sets.push(`backend=${values.backend}`);

    if (command === 'experiment') {
      const name = rest[0];
      if (!name || rest.length > 1) {
        throw usage(`experiment needs one name: ${Object.keys(EXPERIMENTS).join(', ')}`);
      }
      if (values.preset || values.config || values.resume)
        throw usage('experiment takes only --out, --backend, --set, --arms and --jobs');
      const jobs = values.jobs === undefined ? 1 : Number(values.jobs);
      if (!Number.isInteger(jobs) || jobs < 1)
        throw usage(`--jobs: expected a positive integer, got ${JSON.stringify(values.jobs)}`);
      const result = await runExperiment(name, {
        sets: values.set ?? [],
        jobs,
        report: values['no-report'] !== true,
        ...(values.arms !== undefined ? { arms: values.arms.split(',').map((a) => a.trim()) } : {}),
        ...(values.out !== undefined ? { out: values.out } : {}),
        ...(values.backend !== undefined ? { backend: values.backend } : {}),
        reporter: createReporter({ mode: 'auto', stdout: io.stdout, stderr: io.stderr }),
      });
      io.stdout.write(
        result.reportPath !== undefined
          ? `report: ${result.reportPath}\n`
          : result.pending.length > 0
            ? `arms still to run: ${result.pending.join(', ')}\n`
            : 'every arm has finished; rerun without --no-report to write the report\n',
      );
      return 0;
    }

    if (rest.length > 0) throw usage(`unexpected argument ${JSON.stringify(rest[0])}`);
    if (values.resume !== undefined && (values.preset || values.config || sets.length > 0)) {
      throw usage(
        '--resume continues a run with its saved configuration; it cannot be combined with --preset, --config, --set, --out or --backend',
      );
    }
    const config = resolveConfig({
      ...(values.preset !== undefined ? { preset: values.preset } : {}),
      ...(values.config !== undefined ? { file: values.config } : {}),
      sets,
    });
    let result: TrainResult;
    const launchRanks = (lc.ranks ?? 1) * (lc.nnodes ?? 1);
    if (parallel && values.resume === undefined && launchRanks > config.train.microBatchSize) {
      throw new SwitchyardError(
        'CONFIG_INVALID',
        `train.microBatchSize: expected >= the number of ranks (${launchRanks}), got ${config.train.microBatchSize}`,
      );
    }
    if (parallel) {
      // Refuse a used output folder before starting any rank (rank 0 checks again).
      if (values.resume === undefined && (lc.nodeRank ?? 0) === 0) {
        checkOutDirFree(defaultOutDir(config.out, config.name));
      }
      // Every rank gets the same output folder (the default name carries the start time).
      const args: TrainRankArgs = {
        config:
          values.resume === undefined ? { ...config, out: defaultOutDir(config.out, config.name) } : config,
        ...(values.resume !== undefined ? { resume: values.resume } : {}),
      };
      const launched = await launch<TrainRankArgs, TrainResult>({
        module: RANK_MODULE_URL,
        exportName: 'trainRank',
        ...lc,
        backend: config.backend,
        args,
      });
      const index = launched.ranks.indexOf(0);
      if (index < 0) {
        io.stdout.write(
          `node ${launched.nodeRank}: ranks ${launched.ranks.join(', ')} of ${launched.worldSize} finished\n`,
        );
        return 0;
      }
      result = launched.results[index]!;
    } else {
      const reporter = createReporter({
        mode: config.log.progress,
        every: config.log.every,
        stdout: io.stdout,
        stderr: io.stderr,
      });
      result = await train({
        config,
        reporter,
        ...(values.resume !== undefined ? { resume: values.resume } : {}),
      });
    }
    io.stdout.write(
      `final val_loss: ${result.finalValLoss.toFixed(4)}  unigram val_loss: ${result.unigramValLoss.toFixed(4)}\n`,
    );
    io.stdout.write(`checkpoint: ${result.finalCheckpoint}\n`);
    return 0;
  } catch (e) {
    if (isSwitchyardError(e)) {
      io.stderr.write(`error: ${e.message}\n`);
      return e.code === 'CONFIG_INVALID' || e.code === 'INVALID_ARGUMENT' ? 2 : 1;
    }
    io.stderr.write(
      `error: unexpected failure: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
    );
    return 1;
  }
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string' },
      preset: { type: 'string' },
      set: { type: 'string', multiple: true },
      out: { type: 'string' },
      resume: { type: 'string' },
      backend: { type: 'string' },
      checkpoint: { type: 'string' },
      text: { type: 'string' },
      arms: { type: 'string' },
      jobs: { type: 'string' },
      'no-report': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}
