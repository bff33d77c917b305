/**
 * Runs an experiment: one training run per arm into `<out>/<arm>/`, then a comparison report
 * (`<out>/report.md`, `<out>/results.json`, `<out>/plots/`). Arms that already finished in `<out>`
 * are reused and arms with a checkpoint are resumed, so an interrupted experiment continues.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { maxVioNoiseFloor } from '@switchyard/balance';
import { SwitchyardError } from '@switchyard/tensor';
import { cliInvocation } from '../cli-url';
import { applySet, type ConfigObject, mergeConfig, parseConfig } from '../config/load';
import type { TrainConfig } from '../config/schema';
import { barChart, ema, lineChart, type SeriesPoint, specializationHeatmap } from '../report/charts';
import { type EvalRecord, readJsonl, type StepRecord } from '../report/records';
import { renderChart } from '../report/render';
import { fmt, mean, median } from '../report/report';
import { createReporter, type Reporter } from '../reporter';
import { listCheckpoints, RUN_FILES, timestamp } from '../run/outdir';
import { buildModelConfig, routingShape } from '../train/setup';
import { type InterruptedRun, RunInterrupted, train } from '../train/trainer';
import {
  type ArmResult,
  type ArmSummary,
  type ClaimCheck,
  fmtStat,
  SPREAD_FACTOR,
  summariseSeeds,
  VIO_MARGIN,
} from './claims';
import { EXPERIMENTS, type ExperimentArm, type ExperimentDefinition } from './definitions';

export { EXPERIMENTS };

/** Options of {@link runExperiment}. */
export interface ExperimentOptions {
  /** Output folder (default `runs/experiments/<name>-<time>`). */
  readonly out?: string;
  /** `key=value` overrides applied to every arm (e.g. `train.steps=20` for a smoke test). */
  readonly sets?: readonly string[];
  readonly backend?: string;
  /**
   * Seeds: a count (the configuration's seed, then +1, +2, ...) or a list. Default: the definition's
   * `seeds`. Arms outside the definition's `seededArms` run on the first seed only.
   */
  readonly seeds?: number | readonly number[];
  /** Arm ids to run (default: every arm). The report is written once every arm in `out` has finished. */
  readonly arms?: readonly string[];
  /**
   * How many arms train at once, each in its own process (default 1: one after another in this
   * process). wasm trains on one thread, so up to one job per core shortens an experiment.
   */
  readonly jobs?: number;
  /** Write the comparison report once every arm has finished (default true). */
  readonly report?: boolean;
  readonly reporter?: Reporter;
  /** Once aborted (Ctrl-C), the arm training here stops and saves; no further arm starts. */
  readonly stop?: { readonly aborted: boolean };
}

/** What {@link runExperiment} rejects with when `stop` was aborted; rerunning the command resumes. */
export class ExperimentInterrupted extends Error {
  constructor(
    readonly outDir: string,
    /** The arm trained in this process and where it stopped (none when arms ran in their own processes). */
    readonly arm?: { readonly id: string; readonly run: InterruptedRun },
  ) {
    super(`experiment interrupted${arm ? ` in arm ${arm.id} at step ${arm.run.step}` : ''}`);
    this.name = 'ExperimentInterrupted';
  }
}

/** What {@link runExperiment} returns. */
export interface ExperimentResult {
  readonly name: string;
  readonly outDir: string;
  /** The comparison report; undefined while some arm (see `pending`) has not finished. */
  readonly reportPath: string | undefined;
  /** Results of the finished runs (one per arm and seed), in the definition's order. */
  readonly arms: readonly ArmResult[];
  readonly checks: readonly ClaimCheck[];
  /** Ids of arms that have not finished in `outDir` (empty once the report is written). */
  readonly pending: readonly string[];
}

/**
 * The configuration of one arm: defaults, experiment base, arm overrides, then the user's `--set`s,
 * then the run's seed when given. The first seed (the configuration's own) trains into `OUT/ARM`,
 * another seed S into `OUT/ARM-seedS`.
 */
export function armConfig(
  def: ExperimentDefinition,
  arm: ExperimentArm,
  outDir: string,
  sets: readonly string[] = [],
  backend?: string,
  seed?: number,
): TrainConfig {
  let merged: ConfigObject = mergeConfig(def.base, arm.overrides);
  merged = mergeConfig(merged, {
    name: `${def.name}-${arm.id}`,
    description: `${def.title}: ${arm.label}`,
  });
  for (const s of sets) merged = applySet(merged, s);
  const where = `experiment ${def.name}, arm ${arm.id}`;
  const baseSeed = parseConfig(merged, where).seed;
  const dir = seed === undefined || seed === baseSeed ? arm.id : `${arm.id}-seed${seed}`;
  merged = mergeConfig(merged, {
    out: join(outDir, dir),
    ...(seed !== undefined ? { seed } : {}),
    ...(backend !== undefined ? { backend } : {}),
  });
  return parseConfig(merged, `${where}${seed !== undefined && seed !== baseSeed ? `, seed ${seed}` : ''}`);
}

/** One training run of an experiment: an arm with a seed. */
interface ExperimentUnit {
  readonly arm: ExperimentArm;
  readonly seed: number;
  readonly config: TrainConfig;
  /** `ARM` for the first seed, `ARM-seedS` for another (the run folder's name). */
  readonly id: string;
}

/**
 * The seeds of an experiment: a count counts up from the configuration's seed (after `--set`s), a
 * list is taken as is; without either, the definition's `seeds` count (default 1).
 */
export function experimentSeeds(
  def: ExperimentDefinition,
  seeds: number | readonly number[] | undefined,
  sets: readonly string[] = [],
): number[] {
  const base = armConfig(def, def.arms[0]!, 'OUT', sets).seed;
  const s = seeds ?? def.seeds ?? 1;
  if (typeof s === 'number') {
    if (!Number.isInteger(s) || s < 1) {
      throw new SwitchyardError('INVALID_ARGUMENT', `--seeds: expected a positive count, got ${s}`);
    }
    return Array.from({ length: s }, (_, i) => base + i);
  }
  if (s.length === 0) throw new SwitchyardError('INVALID_ARGUMENT', '--seeds: expected at least one seed');
  return [...s];
}

/** Every run of an experiment: each arm on every seed, or on the first only when the definition limits it. */
function experimentUnits(
  def: ExperimentDefinition,
  outDir: string,
  seeds: readonly number[],
  options: ExperimentOptions,
): ExperimentUnit[] {
  return def.arms.flatMap((arm) => {
    const armSeeds =
      def.seededArms === undefined || def.seededArms.includes(arm.id) ? seeds : seeds.slice(0, 1);
    return armSeeds.map((seed) => {
      const config = armConfig(def, arm, outDir, options.sets, options.backend, seed);
      return { arm, seed, config, id: basename(config.out) };
    });
  });
}

/** `text` in lines of at most `width` characters, each after `indent` (the first after `first`). */
function wrap(text: string, width: number, indent = '', first = indent): string[] {
  const lines: string[] = [];
  let line = first;
  let empty = true;
  for (const word of text.split(/\s+/)) {
    if (!empty && line.length + 1 + word.length > width) {
      lines.push(line);
      line = indent;
      empty = true;
    }
    line += empty ? word : ` ${word}`;
    empty = false;
  }
  return [...lines, line];
}

/**
 * `switchyard-train experiment NAME --help`: what the experiment asks, its arms, the claims its
 * report checks, what each arm trains, and the usage; without a name, the list of experiments.
 *
 * @example
 * ```ts
 * experimentHelp('capacity').startsWith('switchyard-train experiment capacity:'); // true
 * ```
 */
export function experimentHelp(name: string | undefined): string {
  const usage =
    'switchyard-train experiment NAME [--out DIR] [--set key=value ...] [--arms ID,...] [--seeds N|A,B,...] [--jobs N] [--no-report]';
  const def = name === undefined ? undefined : EXPERIMENTS[name];
  if (def === undefined) {
    const width = Math.max(...Object.keys(EXPERIMENTS).map((n) => n.length)) + 2;
    return [
      ...(name === undefined ? [] : [`unknown experiment ${JSON.stringify(name)}`, '']),
      `Usage: ${usage}`,
      '',
      'Experiments (switchyard-train experiment NAME --help for its arms and claims):',
      ...Object.values(EXPERIMENTS).map((d) => `  ${d.name.padEnd(width)}${d.title}`),
    ].join('\n');
  }
  const c = armConfig(def, def.arms[0]!, 'OUT');
  const { steps, gradAccum, microBatchSize, seqLen } = c.train;
  const m = c.model;
  const idWidth = Math.max(...def.arms.map((a) => a.id.length)) + 2;
  return [
    `switchyard-train experiment ${def.name}: ${def.title}`,
    '',
    ...wrap(def.description, 100),
    '',
    'Arms (each one training run into OUT/ARM; --arms picks some):',
    ...def.arms.map((a) => `  ${a.id.padEnd(idWidth)}${a.label}`),
    '',
    'Claims from the literature the report checks against the arms:',
    ...def.claims.flatMap((cl) => wrap(cl.text, 100, '    ', '  - ')),
    '',
    ...wrap(
      `Each arm: ${steps} optimizer steps of ${gradAccum} x ${microBatchSize} x ${seqLen} tokens; ` +
        `model ${m.preset} preset${m.dModel !== undefined ? `, width ${m.dModel}` : ''}` +
        `${m.numLayers !== undefined ? `, ${m.numLayers} blocks` : ''}; ` +
        `evaluation every ${c.eval.every} steps; a checkpoint every ${c.checkpoint.every} steps (an interrupted arm resumes).`,
      100,
    ),
    '',
    `Usage: ${usage.replace('NAME', def.name)}`,
    '  --out DIR        output folder (default runs/experiments/NAME-TIME); rerun the command to resume',
    '  --set key=value  applied to every arm, e.g. --set train.steps=50 for a quick look',
    '  --arms ID,...    train only these arms; the report is written once every arm has finished',
    `  --seeds N|A,B    seeds per arm (default ${def.seeds ?? 1}${def.seededArms ? `; arms ${def.seededArms.join(', ')} only, the others run one` : ''}); a count counts up from the seed`,
    '  --jobs N         train N arms at once, each in its own process (one per core)',
    '  --no-report      train without writing the comparison report',
  ].join('\n');
}

/** Mean over layers and domains of the top-K share of each domain's selections. */
export function topKShare(e: EvalRecord, k: number): number {
  const shares: number[] = [];
  for (const layer of e.specialization) {
    for (const row of layer) {
      const total = row.reduce((a, b) => a + b, 0);
      if (!(total > 0)) continue;
      const top = [...row].sort((a, b) => b - a).slice(0, k);
      shares.push(top.reduce((a, b) => a + b, 0) / total);
    }
  }
  return mean(shares);
}

/**
 * MaxVio of uniform random routing (each token picks K distinct experts uniformly) at T tokens:
 * the seeded Monte Carlo estimate of @switchyard/balance's maxVioNoiseFloor (512 batches, seed 0).
 */
export function noiseFloor(T: number, E: number, k: number): number {
  if (k >= E) return 0;
  return maxVioNoiseFloor({ numTokens: T, numExperts: E, k, method: 'monte-carlo', seed: 0 });
}

function summarise(
  unit: Pick<ExperimentUnit, 'arm' | 'seed'>,
  config: TrainConfig,
  steps: readonly StepRecord[],
  evals: readonly EvalRecord[],
  unigram: number,
  k: number,
  E: number,
): ArmResult {
  const { arm } = unit;
  const last = evals[evals.length - 1];
  const tail = steps.slice(Math.floor(steps.length * 0.9));
  const { microBatchSize: B, seqLen: S } = config.train;
  return {
    id: arm.id,
    label: arm.label,
    seed: unit.seed,
    steps: steps[steps.length - 1]?.step ?? 0,
    finalValLoss: last?.valLoss ?? Number.NaN,
    finalTrainLoss: mean(tail.map((s) => s.loss)),
    unigramValLoss: unigram,
    maxVioGlobal: last?.maxVioGlobal ?? Number.NaN,
    maxVioBatch: mean(tail.map((s) => s.maxVioBatch)),
    maxVioMicro: mean(tail.map((s) => s.maxVioMicro)),
    maxVioSeq: mean(tail.map((s) => s.maxVioSeq ?? Number.NaN)),
    maxVioMicroFloor: noiseFloor(B * S, E, k),
    maxVioSeqFloor: noiseFloor(S, E, k),
    specializationPeak: last?.specializationPeak ?? Number.NaN,
    topKShare: last ? topKShare(last, k) : Number.NaN,
    domainExpertMI: mean(last?.domainExpertMI ?? []),
    liftPeak: last?.liftPeak ?? Number.NaN,
    routerLse2: last?.routerLse2 ?? Number.NaN,
    trainDropRate: mean(tail.map((s) => s.dropRate)),
    evalDropRate: last?.dropRate ?? Number.NaN,
    tokensPerSec: median(steps.map((s) => s.tokensPerSec)),
    wallSec: steps[steps.length - 1]?.time ?? Number.NaN,
    k,
    numExperts: E,
    ...(last?.routingVariants
      ? {
          extraEvals: Object.fromEntries(
            Object.entries(last.routingVariants).map(([id, v]) => [
              id,
              { valLoss: v.valLoss, dropRate: v.dropRate },
            ]),
          ),
        }
      : {}),
  };
}

/**
 * Compares an experiment's arms against the claims its definition carries; none until every arm of
 * the experiment has a result.
 */
export function checkClaims(name: string, arms: readonly ArmResult[]): ClaimCheck[] {
  const def = EXPERIMENTS[name];
  if (!def) return [];
  const summaries = summariseArms(def, arms);
  const find = (id: string): ArmSummary | undefined => summaries.find((a) => a.id === id);
  if (def.arms.some((a) => !find(a.id))) return [];
  const arm = (id: string): ArmSummary => {
    const r = find(id);
    if (!r) {
      throw new SwitchyardError(
        'INVALID_ARGUMENT',
        `a claim of experiment ${name} checks arm ${JSON.stringify(id)}, which it does not have; its arms are ${def.arms.map((a) => a.id).join(', ')}`,
      );
    }
    return r;
  };
  return def.claims.map((c) => {
    const { verdict, note, observed } = c.check(arm);
    return { claim: c.text, verdict, ...(note !== undefined ? { note } : {}), observed };
  });
}

/** The runs of each arm (one per seed) summarised over their seeds, in the definition's order. */
export function summariseArms(def: ExperimentDefinition, runs: readonly ArmResult[]): ArmSummary[] {
  return def.arms.flatMap((a) => {
    const mine = runs.filter((r) => r.id === a.id);
    return mine.length > 0 ? [summariseSeeds(mine)] : [];
  });
}

interface ArmRun {
  readonly arm: ExperimentArm;
  /** The run folder's name: the arm id, with `-seedS` for a seed other than the first. */
  readonly unitId: string;
  readonly steps: StepRecord[];
  readonly evals: EvalRecord[];
  readonly result: ArmResult;
}

/** Whether an arm has finished, started (a run folder exists) or not begun in its folder. */
function armStatus(armDir: string): 'finished' | 'started' | 'absent' {
  const runFile = join(armDir, RUN_FILES.run);
  if (!existsSync(runFile)) return 'absent';
  const prior = JSON.parse(readFileSync(runFile, 'utf8')) as { status?: string };
  return prior.status === 'finished' ? 'finished' : 'started';
}

/** Trains one arm in this process, resuming from its last checkpoint when it has one. */
async function trainArm(
  def: ExperimentDefinition,
  arm: ExperimentArm,
  config: TrainConfig,
  reporter: Reporter,
  stop: { readonly aborted: boolean } | undefined,
): Promise<void> {
  const armDir = resolve(config.out);
  const status = armStatus(armDir);
  if (status === 'finished') {
    reporter.info(`experiment ${def.name}: arm ${arm.id} already finished in ${armDir}; reusing its results`);
    return;
  }
  const resume = status === 'started' && listCheckpoints(armDir).length > 0 ? armDir : undefined;
  if (status === 'started' && !resume) clearUncheckpointedArm(def, arm, config, reporter);
  reporter.info(`experiment ${def.name}: arm ${arm.id} (${arm.label})${resume ? ', resuming' : ''}`);
  await train({ config, reporter, ...(resume ? { resume } : {}), ...(stop ? { stop } : {}) });
}

/**
 * An arm interrupted before its first checkpoint cannot be continued: its partial records are
 * removed so it starts again. Only a folder whose run.json names this very arm is touched; any
 * other file left in it makes the new run refuse the folder as usual.
 */
function clearUncheckpointedArm(
  def: ExperimentDefinition,
  arm: ExperimentArm,
  config: TrainConfig,
  reporter: Reporter,
): void {
  const armDir = resolve(config.out);
  const prior = JSON.parse(readFileSync(join(armDir, RUN_FILES.run), 'utf8')) as { name?: unknown };
  if (prior.name !== config.name) return;
  reporter.info(
    `experiment ${def.name}: arm ${arm.id} stopped before its first checkpoint; starting it again`,
  );
  for (const f of [RUN_FILES.metrics, RUN_FILES.evals, RUN_FILES.report, RUN_FILES.plots, RUN_FILES.run]) {
    rmSync(join(armDir, f), { recursive: true, force: true });
  }
}

/** Reads a finished arm's records back from its run folder. */
function loadArm(unit: ExperimentUnit): ArmRun {
  const { arm, config } = unit;
  const armDir = resolve(config.out);
  const steps = readJsonl<StepRecord>(join(armDir, RUN_FILES.metrics));
  const evals = readJsonl<EvalRecord>(join(armDir, RUN_FILES.evals));
  const run = JSON.parse(readFileSync(join(armDir, RUN_FILES.run), 'utf8')) as { unigramValLoss?: number };
  // Run folders written before run.json held the unigram loss have it in their report only.
  const report = join(armDir, RUN_FILES.report);
  const m =
    run.unigramValLoss === undefined && existsSync(report)
      ? /\| unigram validation loss \(same tokens\) \| ([0-9.]+) \|/.exec(readFileSync(report, 'utf8'))
      : null;
  const unigram = run.unigramValLoss ?? (m ? Number(m[1]) : Number.NaN);
  const { k, numExperts } = routingShape(buildModelConfig(config, config.tokenizer.vocabSize));
  return {
    arm,
    unitId: unit.id,
    steps,
    evals,
    result: summarise(unit, config, steps, evals, unigram, k, numExperts),
  };
}

/**
 * Trains arms in child processes, `jobs` at a time: each child is `switchyard-train experiment
 * NAME --arms ID` on the same output folder. Its output goes to `<out>/logs/<arm>.log` and, prefixed
 * with the arm id, to the reporter. Rejects naming every arm whose process failed.
 */
async function trainArmsInProcesses(
  def: ExperimentDefinition,
  arms: readonly ExperimentUnit[],
  outDir: string,
  options: ExperimentOptions,
  jobs: number,
  reporter: Reporter,
): Promise<void> {
  const logDir = join(outDir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const queue = [...arms];
  const failures: string[] = [];
  const runOne = (unit: ExperimentUnit): Promise<void> =>
    new Promise((done) => {
      const arm = { id: unit.id };
      const args = [
        ...cliInvocation(),
        'experiment',
        def.name,
        '--out',
        outDir,
        '--arms',
        unit.arm.id,
        '--seeds',
        `${unit.seed},`,
        '--no-report',
        ...(options.backend !== undefined ? ['--backend', options.backend] : []),
        ...(options.sets ?? []).flatMap((s) => ['--set', s]),
      ];
      const logPath = join(logDir, `${arm.id}.log`);
      const log = createWriteStream(logPath, { flags: 'a' });
      reporter.info(`experiment ${def.name}: arm ${arm.id} started in its own process (log: ${logPath})`);
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      for (const stream of [child.stdout, child.stderr]) {
        createInterface({ input: stream }).on('line', (line) => {
          log.write(`${line}\n`);
          if (line.trim() !== '') reporter.info(`[${arm.id}] ${line}`);
        });
      }
      child.on('error', (e) => {
        failures.push(`${arm.id} (could not start: ${e.message})`);
        log.end(done);
      });
      child.on('exit', (code, signal) => {
        if (code !== 0) failures.push(`${arm.id} (exit ${signal ?? code}; see ${logPath})`);
        log.end(done);
      });
    });
  // Ctrl-C reaches the children from the terminal (they save and exit); no further arm starts.
  const worker = async (): Promise<void> => {
    for (let arm = queue.shift(); arm && options.stop?.aborted !== true; arm = queue.shift()) {
      await runOne(arm);
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, arms.length) }, worker));
  if (options.stop?.aborted === true) throw new ExperimentInterrupted(outDir);
  if (failures.length > 0) {
    throw new SwitchyardError(
      'RUN_FAILED',
      `experiment ${def.name}: ${failures.length} arm(s) failed: ${failures.join(', ')}; rerun the same command to resume them`,
    );
  }
}

/** One series per arm of a per-step value, smoothed by an EMA with factor `alpha`. */
function smoothedSteps(
  runs: readonly ArmRun[],
  value: (s: StepRecord) => number,
  alpha: number,
): SeriesPoint[] {
  return runs.flatMap((r) => {
    const sm = ema(r.steps.map(value), alpha);
    return r.steps.map((s, i) => ({ x: s.step, y: sm[i]!, series: r.unitId }));
  });
}

async function renderComparison(
  outDir: string,
  runs: readonly ArmRun[],
  summaries: readonly ArmSummary[],
): Promise<string[]> {
  const dir = join(outDir, 'plots');
  const written: string[] = [];
  const write = async (name: string, spec: Parameters<typeof renderChart>[0]): Promise<void> => {
    await renderChart(spec, join(dir, name));
    written.push(name);
  };
  const valPoints: SeriesPoint[] = runs.flatMap((r) =>
    r.evals.map((e) => ({ x: e.step, y: e.valLoss, series: r.unitId })),
  );
  await write(
    'val-loss',
    lineChart(valPoints, {
      title: 'Validation loss',
      xTitle: 'optimizer step',
      yTitle: 'nats/token',
      points: true,
    }),
  );
  const trainPoints = smoothedSteps(runs, (s) => s.loss, 0.95);
  await write(
    'train-loss',
    lineChart(trainPoints, {
      title: 'Training loss (EMA 0.95)',
      xTitle: 'optimizer step',
      yTitle: 'nats/token',
    }),
  );
  const vioPoints = smoothedSteps(runs, (s) => s.maxVioBatch, 0.9);
  await write(
    'maxvio-batch',
    lineChart(vioPoints, {
      title: 'MaxVio_batch per optimizer step (EMA 0.9)',
      xTitle: 'optimizer step',
      yTitle: 'MaxVio',
      zeroY: true,
    }),
  );
  if (runs.some((r) => r.steps.some((s) => s.maxVioMicro !== s.maxVioBatch))) {
    const microPoints = smoothedSteps(runs, (s) => s.maxVioMicro, 0.9);
    await write(
      'maxvio-micro',
      lineChart(microPoints, {
        title: 'MaxVio per micro-batch (EMA 0.9)',
        xTitle: 'optimizer step',
        yTitle: 'MaxVio',
        zeroY: true,
      }),
    );
  }
  const globalPoints: SeriesPoint[] = runs.flatMap((r) =>
    r.evals.map((e) => ({ x: e.step, y: e.maxVioGlobal, series: r.unitId })),
  );
  await write(
    'maxvio-global',
    lineChart(globalPoints, {
      title: 'MaxVio_global on the validation set',
      xTitle: 'optimizer step',
      yTitle: 'MaxVio',
      points: true,
      zeroY: true,
    }),
  );
  await write(
    'final-val-loss',
    barChart(
      summaries.map((a) => ({ label: a.id, value: a.finalValLoss })),
      {
        title: summaries.some((a) => a.seeds.length > 1)
          ? 'Final validation loss (mean over seeds)'
          : 'Final validation loss',
        valueTitle: 'nats/token',
        zero: false,
      },
    ),
  );
  if (runs.some((r) => r.result.trainDropRate > 0)) {
    const dropPoints = smoothedSteps(runs, (s) => s.dropRate, 0.9);
    await write(
      'drop-rate',
      lineChart(dropPoints, {
        title: 'Training drop rate (EMA 0.9)',
        xTitle: 'optimizer step',
        yTitle: 'dropped / all assignments',
        zeroY: true,
      }),
    );
  }
  if (runs.some((r) => r.evals.some((e) => e.domainExpertMI !== undefined))) {
    const miPoints: SeriesPoint[] = runs.flatMap((r) =>
      r.evals.map((e) => ({ x: e.step, y: mean(e.domainExpertMI ?? []), series: r.unitId })),
    );
    await write(
      'domain-expert-mi',
      lineChart(miPoints, {
        title: 'Mutual information between domain and expert (mean over layers)',
        xTitle: 'optimizer step',
        yTitle: 'nats',
        points: true,
        zeroY: true,
      }),
    );
  }
  for (const r of runs) {
    const last = r.evals[r.evals.length - 1];
    if (last && last.specialization.length > 0 && r.unitId === r.arm.id) {
      await write(
        `specialization-${r.arm.id}`,
        specializationHeatmap(last, r.result.k / r.result.numExperts),
      );
    }
  }
  return written;
}

/** Drops undefined values and empty objects (for printing only what a configuration sets). */
function pruneEmpty(v: unknown): unknown {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    const p = pruneEmpty(x);
    if (p === undefined) continue;
    if (p !== null && typeof p === 'object' && !Array.isArray(p) && Object.keys(p).length === 0) continue;
    out[k] = p;
  }
  return out;
}

/** The command that reruns an experiment as this one ran (its sets and seeds). */
export function rerunCommand(name: string, seeds: readonly number[], sets: readonly string[]): string {
  return [
    'switchyard-train experiment',
    name,
    ...(seeds.length > 1 ? ['--seeds', seeds.join(',')] : []),
    ...sets.map((s) => `--set ${s}`),
    '--jobs 2',
  ].join(' ');
}

function writeComparisonReport(
  def: ExperimentDefinition,
  outDir: string,
  runs: readonly ArmRun[],
  summaries: readonly ArmSummary[],
  checks: readonly ClaimCheck[],
  plots: readonly string[],
  config: TrainConfig,
  rerun: string,
): string {
  const a = summaries;
  const st = (r: ArmSummary, f: Parameters<ArmSummary['stat']>[0], digits = 4): string =>
    fmtStat(r.stat(f), digits);
  const data =
    config.data.files.length > 0
      ? config.data.files.join(', ')
      : config.data.corpus === 'domains'
        ? 'domain corpus (prose, code, arithmetic, cipher)'
        : 'Brown corpus';
  const multi = a.some((r) => r.seeds.length > 1);
  const extraIds = [...new Set(a.flatMap((r) => Object.keys(r.extraEvals ?? {})))];
  const lines = [
    `# Experiment: ${def.title}`,
    '',
    def.description,
    '',
    '## Setup',
    '',
    `- data: ${data}, ${config.data.batching === 'domain' ? 'domain-homogeneous' : 'mixed'} micro-batches; validation split seed ${config.data.splitSeed} (the same for every training seed)`,
    `- model: ${config.model.preset} preset with overrides ${JSON.stringify(pruneEmpty({ ...config.model, preset: undefined }))}`,
    `- batch: ${config.train.gradAccum} micro-batches x ${config.train.microBatchSize} sequences x ${config.train.seqLen} tokens per optimizer step, ${config.train.steps} steps`,
    `- optimizer: AdamW lr ${config.train.lr}, warm-up ${config.train.warmupSteps}, cosine to ${config.train.minLrRatio}x, weight decay ${config.train.weightDecay}, clip ${config.train.clipNorm}`,
    `- evaluation: ${config.eval.tokensPerDomain} validation tokens per domain`,
    `- seeds: ${[...new Set(a.flatMap((r) => r.seeds))].join(', ')}${def.seededArms ? ` (arms ${def.seededArms.join(', ')} on every seed, the others on the first)` : ''}`,
    '',
    'Rerun:',
    '',
    '```sh',
    rerun,
    '```',
    '',
    '## Results',
    '',
    multi
      ? "Each value is the mean over the arm's seeds, with [min-max] over the seeds where the arm has more than one."
      : 'Each arm ran one seed: there is no seed spread, so no loss difference is decided.',
    '',
    `| arm | seeds | final val loss | final train loss | MaxVio_global | MaxVio_batch (step) | MaxVio (micro-batch) | MaxVio (sequence) | I(domain; expert) nats | max lift | max F/(K/E) | router LSE^2 | drop rate (train / eval) | tokens/s |${extraIds.map((id) => ` val loss, eval ${id} |`).join('')}`,
    `|---|---|---|---|---|---|---|---|---|---|---|---|---|---|${extraIds.map(() => '---|').join('')}`,
    ...a.map(
      (r) =>
        `| ${r.id} | ${r.seeds.length} | ${st(r, 'finalValLoss')} | ${st(r, 'finalTrainLoss')} | ${st(r, 'maxVioGlobal', 3)} | ${st(r, 'maxVioBatch', 3)} | ${st(r, 'maxVioMicro', 3)} | ${st(r, 'maxVioSeq', 3)} | ${st(r, 'domainExpertMI', 4)} | ${st(r, 'liftPeak', 3)} | ${st(r, 'specializationPeak', 3)} | ${st(r, 'routerLse2', 3)} | ${fmt(r.trainDropRate, 3)} / ${fmt(r.evalDropRate, 3)} | ${fmt(r.tokensPerSec)} |${extraIds.map((id) => ` ${fmtStat(r.extra(id, 'valLoss'))} |`).join('')}`,
    ),
    '',
    `Unigram validation loss (same tokenizer and tokens): ${fmt(a[0]?.unigramValLoss)}. Noise floors (MaxVio of uniform random routing at the same token count, seeded Monte Carlo over 512 batches): micro-batch ${fmt(a[0]?.maxVioMicroFloor, 3)}, sequence ${fmt(a[0]?.maxVioSeqFloor, 3)}. MaxVio_batch, the micro-batch and sequence MaxVio and the training loss are means over the last 10% of steps. I(domain; expert) is the mutual information between a token's domain and its selected experts (mean over layers; 0: no specialisation, log(domains) at most); max lift is the largest F[d][e] / mean_d F[d][e] (1 when every domain routes alike, even under collapse); max F/(K/E) mixes specialisation with imbalance.`,
    '',
    '## What the literature reports, and what this run shows',
    '',
    '| claim | this run | verdict |',
    '|---|---|---|',
    ...checks.map((c) => `| ${c.claim} | ${c.observed} | ${c.verdict}${c.note ? ` (${c.note})` : ''} |`),
    '',
    `A loss effect counts only when the gap between two arms' means exceeds ${SPREAD_FACTOR} x the larger same-arm seed spread (max - min over seeds); with one seed per arm a loss claim is "not detected (one seed, no spread)". A MaxVio difference counts above ${VIO_MARGIN * 100}%.`,
    '',
    '## Plots',
    '',
    ...plots.flatMap((p) => [`### ${p}`, '', `![${p}](plots/${p}.png)`, '', `[SVG](plots/${p}.svg)`, '']),
    '## Runs',
    '',
    ...runs.map(
      (r) => `- \`${r.unitId}\`: ${r.arm.label}, seed ${r.result.seed} ([run report](${r.unitId}/report.md))`,
    ),
    '',
  ];
  const path = join(outDir, 'report.md');
  writeFileSync(path, lines.join('\n'));
  return path;
}

/**
 * Runs every arm of an experiment and writes the comparison report.
 *
 * When to use: `switchyard-train experiment <name>`; each documented experiment page comes from one.
 *
 * @example
 * ```ts
 * const r = await runExperiment('capacity', { sets: ['train.steps=20'] });
 * console.log(r.reportPath);
 * ```
 */
export async function runExperiment(
  name: string,
  options: ExperimentOptions = {},
): Promise<ExperimentResult> {
  const def = EXPERIMENTS[name];
  if (!def) {
    throw new SwitchyardError(
      'INVALID_ARGUMENT',
      `unknown experiment ${JSON.stringify(name)}; expected one of ${Object.keys(EXPERIMENTS).join(', ')}`,
    );
  }
  const ids = def.arms.map((a) => a.id);
  const unknown = (options.arms ?? []).filter((id) => !ids.includes(id));
  if (unknown.length > 0 || (options.arms !== undefined && options.arms.length === 0)) {
    throw new SwitchyardError(
      'INVALID_ARGUMENT',
      `--arms: unknown arm ${JSON.stringify(unknown[0] ?? '')} of experiment ${name}; expected a comma-separated subset of ${ids.join(', ')}`,
    );
  }
  const jobs = options.jobs ?? 1;
  if (!Number.isInteger(jobs) || jobs < 1) {
    throw new SwitchyardError('INVALID_ARGUMENT', `--jobs: expected a positive integer, got ${jobs}`);
  }
  const outDir = resolve(options.out ?? join('runs', 'experiments', `${name}-${timestamp()}`));
  const reporter = options.reporter ?? createReporter({ mode: 'lines' });
  // Validate every run's configuration before the first one starts.
  const seeds = experimentSeeds(def, options.seeds, options.sets);
  const units = experimentUnits(def, outDir, seeds, options);
  if (units.some((u) => u.config.data.valFraction === 0)) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `data.valFraction: experiment ${name} compares validation losses; expected a value > 0, got 0`,
    );
  }
  const finished = (u: ExperimentUnit): boolean => armStatus(resolve(u.config.out)) === 'finished';
  mkdirSync(outDir, { recursive: true });
  const selected = units.filter((u) => options.arms === undefined || options.arms.includes(u.arm.id));
  const toTrain = selected.filter((u) => !finished(u));
  if (jobs > 1 && toTrain.length > 1) {
    await trainArmsInProcesses(def, toTrain, outDir, options, jobs, reporter);
  } else {
    for (const u of selected) {
      if (options.stop?.aborted === true) throw new ExperimentInterrupted(outDir);
      try {
        await trainArm(def, u.arm, u.config, reporter, options.stop);
      } catch (e) {
        if (e instanceof RunInterrupted) throw new ExperimentInterrupted(outDir, { id: u.id, run: e.run });
        throw e;
      }
    }
  }
  const pending = units.filter((u) => !finished(u)).map((u) => u.id);
  if (pending.length > 0 || options.report === false) {
    if (pending.length > 0 && options.report !== false) {
      reporter.info(
        `experiment ${name}: runs still to do: ${pending.join(', ')}; the report is written once every run has finished`,
      );
    }
    return {
      name,
      outDir,
      reportPath: undefined,
      arms: units.filter((u) => !pending.includes(u.id)).map((u) => loadArm(u).result),
      checks: [],
      pending,
    };
  }
  const runs = units.map((u) => loadArm(u));
  const results = runs.map((r) => r.result);
  const summaries = summariseArms(def, results);
  const checks = checkClaims(name, results);
  const plots = await renderComparison(outDir, runs, summaries);
  const rerun = rerunCommand(name, seeds, options.sets ?? []);
  writeFileSync(
    join(outDir, 'results.json'),
    `${JSON.stringify(
      {
        experiment: name,
        seeds,
        rerun,
        runs: results,
        arms: summaries.map(({ runs: _r, stat: _s, extra: _e, ...mean }) => mean),
        checks,
      },
      null,
      2,
    )}\n`,
  );
  const reportPath = writeComparisonReport(
    def,
    outDir,
    runs,
    summaries,
    checks,
    plots,
    units[0]!.config,
    rerun,
  );
  reporter.info(`experiment ${name}: report ${reportPath}`);
  return { name, outDir, reportPath, arms: results, checks, pending };
}
