/**
 * The `switchyard-train` command line: `train` (default), `eval`, `generate` and `experiment`. Parses flags,
 * resolves the configuration, runs the job and turns errors into one clear line and an exit code
 * (2 for usage and configuration errors, 1 for everything else).
 */
import { parseArgs } from 'node:util';
import { type LaunchConfig, launch, parseLaunchArgs, schedulerLaunchConfig } from '@switchyard/parallel';
import { initBackend, isSwitchyardError, SwitchyardError } from '@switchyard/tensor';
import { compressExperimentMain, compressMain } from './compress/cli';
import { helpText } from './config/help';
import { packageVersion, resolveConfig } from './config/load';
import { generateFromCheckpoint, parseSampleFlags, shellQuote } from './eval/generate';
import { evaluateCheckpoint } from './eval/score';
import { EXPERIMENTS, ExperimentInterrupted, experimentHelp, runExperiment } from './experiments/run';
import { reportFailure } from './failure';
import { RANK_MODULE_URL, type TrainRankArgs, type TrainRankResult } from './rank';
import { ema } from './report/charts';
import { createReporter, type TextSink } from './reporter';
import { StopRequest, stopOnCtrlC } from './run/interrupt';
import { checkOutDirFree, defaultOutDir } from './run/outdir';
import { checkExpertLayout } from './train/expert-parallel';
import { checkRanks } from './train/setup';
import { type InterruptedRun, RunInterrupted, type TrainResult, train } from './train/trainer';

/** Streams the CLI writes to (process streams by default; tests pass collectors). */
export interface CliIO {
  readonly stdout: TextSink;
  readonly stderr: TextSink;
  /**
   * Stops training after the current step, as Ctrl-C does (tests request it). Without one, the
   * first SIGINT requests a stop while a run or experiment trains.
   */
  readonly stop?: StopRequest;
}

/** Exit code of a run stopped by Ctrl-C (128 + SIGINT), as shells expect. */
const EXIT_INTERRUPTED = 130;

const COMMANDS = ['train', 'eval', 'generate', 'experiment'] as const;
type Command = (typeof COMMANDS)[number];

/** Flags that only some commands take, in groups named together in the error. */
const FLAG_OWNERS: readonly { readonly flags: readonly string[]; readonly commands: readonly Command[] }[] = [
  { flags: ['preset', 'config', 'resume'], commands: ['train'] },
  { flags: ['pipeline', 'schedule', 'expert-parallel'], commands: ['train'] },
  { flags: ['out', 'set'], commands: ['train', 'experiment'] },
  { flags: ['checkpoint'], commands: ['eval', 'generate'] },
  { flags: ['text'], commands: ['eval'] },
  { flags: ['prompt', 'max-tokens', 'temperature', 'top-k', 'top-p', 'seed'], commands: ['generate'] },
  { flags: ['arms', 'jobs', 'no-report', 'seeds'], commands: ['experiment'] },
];

function usage(message: string): SwitchyardError {
  return new SwitchyardError('INVALID_ARGUMENT', `${message} (see switchyard-train --help)`);
}

/** `a`, `a and b`, `a, b and c`. */
function listText(items: readonly string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items.at(-1)}`;
}

type Flags = ReturnType<typeof parse>['values'];

/** Refuses flags the command does not take, naming the commands that do. */
function checkFlags(command: Command, values: Flags): void {
  for (const group of FLAG_OWNERS) {
    if (group.commands.includes(command)) continue;
    if (!group.flags.some((f) => values[f as keyof Flags] !== undefined)) continue;
    const flags = listText(group.flags.map((f) => `--${f}`));
    const verb = group.flags.length > 1 ? 'apply' : 'applies';
    throw usage(`${flags} ${verb} to ${listText(group.commands)} only, not to ${command}`);
  }
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
      throw usage(parseErrorText(e));
    }
    const { values, positionals } = parsed;
    if (values.version) {
      io.stdout.write(`switchyard-train ${packageVersion()}\n`);
      return 0;
    }
    const first = positionals[0];
    if (values.help) {
      io.stdout.write(`${first === 'experiment' ? experimentHelp(positionals[1]) : helpText()}\n`);
      return 0;
    }
    const command: Command = (COMMANDS as readonly string[]).includes(first ?? '')
      ? (first as Command)
      : 'train';
    const rest = command === first ? positionals.slice(1) : positionals;
    if (command !== 'train' && Object.keys(lc).length > 0) {
      throw usage(`--ranks, --nnodes, --node-rank and --master apply to training only, not to ${command}`);
    }
    // Started by srun or as a Kubernetes indexed Job: nodes, node rank and rendezvous from the
    // environment (flags still win).
    const scheduled =
      command === 'train'
        ? schedulerLaunchConfig(process.env, lc.nnodes !== undefined ? { nnodes: lc.nnodes } : {})
        : undefined;
    if (scheduled) {
      lc = { ...scheduled.config, ...lc };
      io.stdout.write(`${scheduled.summary}\n`);
    }
    checkFlags(command, values);
    switch (command) {
      case 'eval':
        return await evalCommand(values, rest, io);
      case 'generate':
        return await generateCommand(values, rest, io);
      case 'experiment':
        return await whileStoppable(io, (stop) => experimentCommand(values, rest, io, stop, argv));
      case 'train':
        return await whileStoppable(io, (stop) => trainCommand(values, rest, lc, io, stop));
    }
  } catch (e) {
    return reportFailure(e, io.stderr);
  }
}

/**
 * Runs a training command with a stop request: the caller's, or one that the first Ctrl-C sets
 * while the command runs.
 */
async function whileStoppable(io: CliIO, run: (stop: StopRequest) => Promise<number>): Promise<number> {
  if (io.stop !== undefined) return run(io.stop);
  const stop = new StopRequest();
  const release = stopOnCtrlC(stop, io.stderr);
  try {
    return await run(stop);
  } finally {
    release();
  }
}

/** The lines that end an interrupted run: where it stopped, its checkpoint, the command that continues it. */
function interruptedLines(run: InterruptedRun, lc: Partial<LaunchConfig> = {}): string {
  const where = `interrupted after step ${run.step} of ${run.totalSteps}`;
  const checkpoint =
    run.checkpoint === undefined
      ? 'no checkpoint yet'
      : run.saved
        ? `checkpoint saved: ${run.checkpoint}`
        : `its newest checkpoint, of this step: ${run.checkpoint}`;
  // The same ranks (and, on several machines, the same node flags) continue it at the same speed.
  const launchFlags = [
    ...(lc.ranks !== undefined && lc.ranks > 1 ? ['--ranks', String(lc.ranks)] : []),
    ...(lc.nnodes !== undefined && lc.nnodes > 1 ? ['--nnodes', String(lc.nnodes)] : []),
    ...(lc.nodeRank !== undefined && (lc.nnodes ?? 1) > 1 ? ['--node-rank', String(lc.nodeRank)] : []),
    ...(lc.master !== undefined ? ['--master', lc.master] : []),
  ];
  const command = ['switchyard-train', '--resume', run.runDir, ...launchFlags].map(shellQuote).join(' ');
  return `${where}; ${checkpoint}\ncontinue with: ${command}\n`;
}

/** Initialises the backend `--backend` names (default: the fastest that loads, or SWITCHYARD_BACKEND). */
async function backendFrom(values: Flags): Promise<void> {
  await initBackend(values.backend ? { backend: values.backend as 'wasm' } : {});
}

/** `eval --checkpoint DIR --text FILE`: mean next-token loss of a checkpoint on a text file. */
async function evalCommand(values: Flags, rest: readonly string[], io: CliIO): Promise<number> {
  if (rest.length > 0) throw usage(`eval takes no positional arguments, got ${rest.join(' ')}`);
  if (!values.checkpoint || !values.text) throw usage('eval needs --checkpoint DIR and --text FILE');
  await backendFrom(values);
  const r = await evaluateCheckpoint(values.checkpoint, values.text);
  io.stdout.write(`loss: ${r.loss.toFixed(6)} tokens: ${r.predicted}\n`);
  return 0;
}

/** `generate --checkpoint DIR --prompt TEXT`: the prompt and the model's continuation, on stdout. */
async function generateCommand(values: Flags, rest: readonly string[], io: CliIO): Promise<number> {
  if (rest.length > 0) throw usage(`generate takes no positional arguments, got ${rest.join(' ')}`);
  if (!values.checkpoint || values.prompt === undefined) {
    throw usage('generate needs --checkpoint DIR and --prompt TEXT');
  }
  const options = parseSampleFlags(values);
  await backendFrom(values);
  const sample = await generateFromCheckpoint(values.checkpoint, values.prompt, options);
  io.stdout.write(`${sample.prompt}${sample.continuation}\n`);
  return 0;
}

/** `--seeds N` (how many seeds) or `--seeds A,B,...` (which seeds; a trailing comma makes one seed a list). */
function parseSeeds(value: string): number | number[] {
  const expected = 'a count of seeds (e.g. 2) or a comma-separated list of seeds (e.g. 1234,1235)';
  if (!value.includes(',')) {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1)
      throw usage(`--seeds: expected ${expected}, got ${JSON.stringify(value)}`);
    return n;
  }
  const list = value
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '')
    .map(Number);
  if (
    list.length === 0 ||
    list.some((x) => !Number.isInteger(x) || x < 0) ||
    new Set(list).size !== list.length
  ) {
    throw usage(`--seeds: expected ${expected} (distinct integers >= 0), got ${JSON.stringify(value)}`);
  }
  return list;
}

/** `experiment NAME`: every arm (or `--arms`), then the comparison report. */
async function experimentCommand(
  values: Flags,
  rest: readonly string[],
  io: CliIO,
  stop: StopRequest,
  argv: readonly string[],
): Promise<number> {
  const name = rest[0];
  if (!name || rest.length > 1) {
    throw usage(`experiment needs one name: ${Object.keys(EXPERIMENTS).join(', ')}`);
  }
  const jobs = values.jobs === undefined ? 1 : Number(values.jobs);
  if (!Number.isInteger(jobs) || jobs < 1)
    throw usage(`--jobs: expected a positive integer, got ${JSON.stringify(values.jobs)}`);
  const arms = values.arms?.split(',').map((a) => a.trim());
  const seeds = values.seeds === undefined ? undefined : parseSeeds(values.seeds);
  let result: Awaited<ReturnType<typeof runExperiment>>;
  try {
    result = await runExperiment(name, {
      sets: values.set ?? [],
      jobs,
      report: values['no-report'] !== true,
      ...(arms !== undefined ? { arms } : {}),
      ...(seeds !== undefined ? { seeds } : {}),
      ...(values.out !== undefined ? { out: values.out } : {}),
      ...(values.backend !== undefined ? { backend: values.backend } : {}),
      reporter: createReporter({ mode: 'auto', stdout: io.stdout, stderr: io.stderr }),
      stop,
    });
  } catch (e) {
    if (!(e instanceof ExperimentInterrupted)) throw e;
    // The same command resumes: finished arms are reused, the others continue from their checkpoints.
    const again = values.out === undefined ? [...argv, '--out', e.outDir] : argv;
    io.stdout.write(
      `${e.arm ? `arm ${e.arm.id} ${interruptedLines(e.arm.run).split('\n')[0]}\n` : 'experiment interrupted\n'}` +
        `continue with: switchyard-train ${again.map(shellQuote).join(' ')}\n`,
    );
    return EXIT_INTERRUPTED;
  }
  // With --no-report (as in the processes of --jobs) say only what this command trained.
  const trained = result.arms.map((a) => a.id).filter((id) => arms === undefined || arms.includes(id));
  io.stdout.write(
    result.reportPath !== undefined
      ? `report: ${result.reportPath}\n`
      : values['no-report'] === true
        ? `arms finished: ${trained.join(', ')}\n`
        : `arms still to run: ${result.pending.join(', ')}\n`,
  );
  return 0;
}

/**
 * `[train]`: a new run, or `--resume DIR`; over `--ranks` / `--nnodes`: data parallel, with
 * `--pipeline` stages or `--expert-parallel` groups.
 */
async function trainCommand(
  values: Flags,
  rest: readonly string[],
  lc: Partial<LaunchConfig>,
  io: CliIO,
  stop: StopRequest,
): Promise<number> {
  if (rest.length > 0) throw usage(`unexpected argument ${JSON.stringify(rest[0])}`);
  const sets = [...(values.set ?? [])];
  if (values.out !== undefined) sets.push(`out=${values.out}`);
  if (values.backend !== undefined) sets.push(`backend=${values.backend}`);
  const extendSteps = values.resume === undefined ? undefined : resumeExtension(values, sets);
  // The parallel layout may change when a run resumes: its flags are kept apart from the other sets.
  const expertParallel = expertParallelFlag(values);
  const layoutSets = [
    ...(values.pipeline !== undefined ? [`parallel.pipeline=${values.pipeline}`] : []),
    ...(values.schedule !== undefined ? [`parallel.schedule=${values.schedule}`] : []),
    ...(expertParallel !== undefined ? [`parallel.expertParallel=${expertParallel}`] : []),
  ];
  const config = resolveConfig({
    ...(values.preset !== undefined ? { preset: values.preset } : {}),
    ...(values.config !== undefined ? { file: values.config } : {}),
    sets: values.resume === undefined ? [...sets, ...layoutSets] : layoutSets,
  });
  const layout =
    values.resume !== undefined && layoutSets.length > 0
      ? {
          ...(values.pipeline !== undefined ? { pipeline: config.parallel.pipeline } : {}),
          ...(values.schedule !== undefined ? { schedule: config.parallel.schedule } : {}),
          ...(expertParallel !== undefined ? { expertParallel } : {}),
        }
      : undefined;
  const parallel = (lc.ranks ?? 1) > 1 || (lc.nnodes ?? 1) > 1;
  let result: TrainResult;
  const launchRanks = (lc.ranks ?? 1) * (lc.nnodes ?? 1);
  if (values.resume === undefined) {
    checkRanks(config, launchRanks);
    checkExpertLayout(config, launchRanks);
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
      ...(layout !== undefined ? { parallel: layout } : {}),
      ...(extendSteps !== undefined ? { extendSteps } : {}),
      stopFlag: stop.flag,
    };
    const launched = await launch<TrainRankArgs, TrainRankResult>({
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
    const ranked = launched.results[index]!;
    if ('interrupted' in ranked) {
      io.stdout.write(interruptedLines(ranked.interrupted, lc));
      return EXIT_INTERRUPTED;
    }
    result = ranked;
  } else {
    const reporter = createReporter({
      mode: config.log.progress,
      every: config.log.every,
      stdout: io.stdout,
      stderr: io.stderr,
    });
    try {
      result = await train({
        config,
        reporter,
        stop,
        ...(values.resume !== undefined ? { resume: values.resume } : {}),
        ...(layout !== undefined ? { parallel: layout } : {}),
        ...(extendSteps !== undefined ? { extendSteps } : {}),
      });
    } catch (e) {
      if (!(e instanceof RunInterrupted)) throw e;
      io.stdout.write(interruptedLines(e.run));
      return EXIT_INTERRUPTED;
    }
  }
  io.stdout.write(`${finalLine(result)}\n`);
  io.stdout.write(`checkpoint: ${result.finalCheckpoint}\n`);
  return 0;
}

/**
 * What `--resume` may change: only `train.steps` (`--set train.steps=N`, to train longer); the rest
 * of the configuration is the checkpoint's.
 */
function resumeExtension(values: Flags, sets: readonly string[]): number | undefined {
  if (values.preset || values.config || values.out !== undefined || values.backend !== undefined) {
    throw usage(
      '--resume continues a run with its saved configuration; it cannot be combined with --preset, --config, --out or --backend',
    );
  }
  let steps: number | undefined;
  for (const s of sets) {
    const m = /^\s*train\.steps\s*=\s*(\S+)\s*$/.exec(s);
    if (!m) {
      throw usage(
        `--resume takes only --set train.steps=N (to train longer); ${JSON.stringify(s)} would change the saved configuration`,
      );
    }
    steps = Number(m[1]);
    if (!Number.isInteger(steps) || steps < 1) {
      throw new SwitchyardError(
        'CONFIG_INVALID',
        `train.steps: expected an integer >= 1, got ${JSON.stringify(m[1])}`,
      );
    }
  }
  return steps;
}

/** The run's result line: validation loss against the unigram baseline, or the training loss without a validation set. */
function finalLine(result: TrainResult): string {
  if (result.finalValLoss !== undefined && result.unigramValLoss !== undefined) {
    return `final val_loss: ${result.finalValLoss.toFixed(4)}  unigram val_loss: ${result.unigramValLoss.toFixed(4)}`;
  }
  const train = ema(result.steps.map((s) => s.loss)).at(-1);
  return `final train_loss (EMA 0.9): ${train?.toFixed(4) ?? 'no steps'}  (no validation set: data.valFraction = 0)`;
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
      pipeline: { type: 'string' },
      schedule: { type: 'string' },
      prompt: { type: 'string' },
      'max-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-k': { type: 'string' },
      'top-p': { type: 'string' },
      seed: { type: 'string' },
      arms: { type: 'string' },
      jobs: { type: 'string' },
      seeds: { type: 'string' },
      'no-report': { type: 'boolean' },
      'expert-parallel': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
    },
  });
}

/** `--expert-parallel P`: the ranks per expert-parallel group it asks for, or undefined when absent. */
function expertParallelFlag(values: { readonly 'expert-parallel'?: string | undefined }): number | undefined {
  const raw = values['expert-parallel'];
  if (raw === undefined) return undefined;
  const p = raw.trim() === '' ? Number.NaN : Number(raw);
  if (!Number.isInteger(p) || p < 1)
    throw usage(`--expert-parallel: expected an integer >= 1, got ${JSON.stringify(raw)}`);
  return p;
}

/** A parse error of node:util's parseArgs in one plain sentence, without its advice about `--`. */
function parseErrorText(e: unknown): string {
  const err = e as { code?: string; message?: string };
  const message = String(err.message ?? e);
  const option = /'(-[^' ]*)/.exec(message)?.[1];
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && option !== undefined) return `unknown option ${option}`;
  if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && option !== undefined) {
    return /argument missing/.test(message) ? `${option} needs a value` : `${option} takes no value`;
  }
  return message;
}
