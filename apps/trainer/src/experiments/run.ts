/**
 * Runs an experiment: one training run per arm into `<out>/<arm>/`, then a comparison report
 * (`<out>/report.md`, `<out>/results.json`, `<out>/plots/`). Arms that already finished in `<out>`
 * are reused and arms with a checkpoint are resumed, so an interrupted experiment continues.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
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
import { type ArmResult, type ClaimCheck, LOSS_MARGIN, VIO_MARGIN } from './claims';
import { EXPERIMENTS, type ExperimentArm, type ExperimentDefinition } from './definitions';

export { EXPERIMENTS };

/** Options of {@link runExperiment}. */
export interface ExperimentOptions {
  /** Output folder (default `runs/experiments/<name>-<time>`). */
  readonly out?: string;
  /** `key=value` overrides applied to every arm (e.g. `train.steps=20` for a smoke test). */
  readonly sets?: readonly string[];
  readonly backend?: string;
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
  /** Results of the finished arms, in the definition's order. */
  readonly arms: readonly ArmResult[];
  readonly checks: readonly ClaimCheck[];
  /** Ids of arms that have not finished in `outDir` (empty once the report is written). */
  readonly pending: readonly string[];
}

/** The configuration of one arm: defaults, experiment base, arm overrides, then the user's `--set`s. */
export function armConfig(
  def: ExperimentDefinition,
  arm: ExperimentArm,
  outDir: string,
  sets: readonly string[] = [],
  backend?: string,
): TrainConfig {
  let merged: ConfigObject = mergeConfig(def.base, arm.overrides);
  merged = mergeConfig(merged, {
    name: `${def.name}-${arm.id}`,
    description: `${def.title}: ${arm.label}`,
  });
  for (const s of sets) merged = applySet(merged, s);
  merged = mergeConfig(merged, { out: join(outDir, arm.id), ...(backend !== undefined ? { backend } : {}) });
  return parseConfig(merged, `experiment ${def.name}, arm ${arm.id}`);
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
    'switchyard-train experiment NAME [--out DIR] [--set key=value ...] [--arms ID,...] [--jobs N] [--no-report]';
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

function summarise(
  arm: ExperimentArm,
  steps: readonly StepRecord[],
  evals: readonly EvalRecord[],
  unigram: number,
  k: number,
  E: number,
): ArmResult {
  const last = evals[evals.length - 1];
  const tail = steps.slice(Math.floor(steps.length * 0.9));
  return {
    id: arm.id,
    label: arm.label,
    steps: steps[steps.length - 1]?.step ?? 0,
    finalValLoss: last?.valLoss ?? Number.NaN,
    unigramValLoss: unigram,
    maxVioGlobal: last?.maxVioGlobal ?? Number.NaN,
    maxVioBatch: mean(tail.map((s) => s.maxVioBatch)),
    maxVioMicro: mean(tail.map((s) => s.maxVioMicro)),
    specializationPeak: last?.specializationPeak ?? Number.NaN,
    topKShare: last ? topKShare(last, k) : Number.NaN,
    trainDropRate: mean(tail.map((s) => s.dropRate)),
    evalDropRate: last?.dropRate ?? Number.NaN,
    tokensPerSec: median(steps.map((s) => s.tokensPerSec)),
    wallSec: steps[steps.length - 1]?.time ?? Number.NaN,
    k,
    numExperts: E,
  };
}

/**
 * Compares an experiment's arms against the claims its definition carries; none until every arm of
 * the experiment has a result.
 */
export function checkClaims(name: string, arms: readonly ArmResult[]): ClaimCheck[] {
  const def = EXPERIMENTS[name];
  if (!def) return [];
  const find = (id: string): ArmResult | undefined => arms.find((a) => a.id === id);
  if (def.arms.some((a) => !find(a.id))) return [];
  const arm = (id: string): ArmResult => {
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
    const { holds, observed } = c.check(arm);
    return { claim: c.text, holds, observed };
  });
}

interface ArmRun {
  readonly arm: ExperimentArm;
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
function loadArm(arm: ExperimentArm, config: TrainConfig): ArmRun {
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
  return { arm, steps, evals, result: summarise(arm, steps, evals, unigram, k, numExperts) };
}

/**
 * Trains arms in child processes, `jobs` at a time: each child is `switchyard-train experiment
 * NAME --arms ID` on the same output folder. Its output goes to `<out>/logs/<arm>.log` and, prefixed
 * with the arm id, to the reporter. Rejects naming every arm whose process failed.
 */
async function trainArmsInProcesses(
  def: ExperimentDefinition,
  arms: readonly ExperimentArm[],
  outDir: string,
  options: ExperimentOptions,
  jobs: number,
  reporter: Reporter,
): Promise<void> {
  const logDir = join(outDir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const queue = [...arms];
  const failures: string[] = [];
  const runOne = (arm: ExperimentArm): Promise<void> =>
    new Promise((done) => {
      const args = [
        ...cliInvocation(),
        'experiment',
        def.name,
        '--out',
        outDir,
        '--arms',
        arm.id,
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
    return r.steps.map((s, i) => ({ x: s.step, y: sm[i]!, series: r.arm.id }));
  });
}

async function renderComparison(outDir: string, runs: readonly ArmRun[]): Promise<string[]> {
  const dir = join(outDir, 'plots');
  const written: string[] = [];
  const write = async (name: string, spec: Parameters<typeof renderChart>[0]): Promise<void> => {
    await renderChart(spec, join(dir, name));
    written.push(name);
  };
  const valPoints: SeriesPoint[] = runs.flatMap((r) =>
    r.evals.map((e) => ({ x: e.step, y: e.valLoss, series: r.arm.id })),
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
    r.evals.map((e) => ({ x: e.step, y: e.maxVioGlobal, series: r.arm.id })),
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
      runs.map((r) => ({ label: r.arm.id, value: r.result.finalValLoss })),
      { title: 'Final validation loss', valueTitle: 'nats/token', zero: false },
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
  for (const r of runs) {
    const last = r.evals[r.evals.length - 1];
    if (last && last.specialization.length > 0) {
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

function writeComparisonReport(
  def: ExperimentDefinition,
  outDir: string,
  runs: readonly ArmRun[],
  checks: readonly ClaimCheck[],
  plots: readonly string[],
  config: TrainConfig,
): string {
  const a = runs.map((r) => r.result);
  const verdict = (h: boolean | null): string => (h === null ? 'cannot tell' : h ? 'yes' : 'no');
  const lines = [
    `# Experiment: ${def.title}`,
    '',
    def.description,
    '',
    '## Setup',
    '',
    `- data: ${config.data.files.length === 0 ? 'Brown corpus' : config.data.files.join(', ')}, ${config.data.batching === 'domain' ? 'domain-homogeneous' : 'mixed'} micro-batches`,
    `- model: ${config.model.preset} preset with overrides ${JSON.stringify(pruneEmpty({ ...config.model, preset: undefined }))}`,
    `- batch: ${config.train.gradAccum} micro-batches x ${config.train.microBatchSize} sequences x ${config.train.seqLen} tokens per optimizer step, ${config.train.steps} steps`,
    `- optimizer: AdamW lr ${config.train.lr}, warm-up ${config.train.warmupSteps}, cosine to ${config.train.minLrRatio}x, weight decay ${config.train.weightDecay}, clip ${config.train.clipNorm}`,
    `- evaluation: ${config.eval.tokensPerDomain} validation tokens per domain; seed ${config.seed}`,
    '',
    '## Results',
    '',
    '| arm | final val loss | MaxVio_global | MaxVio_batch (step) | MaxVio (micro-batch) | max F/(K/E) | top-K share | drop rate (train / eval) | tokens/s | wall (s) |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...a.map(
      (r) =>
        `| ${r.id} | ${fmt(r.finalValLoss)} | ${fmt(r.maxVioGlobal, 3)} | ${fmt(r.maxVioBatch, 3)} | ${fmt(r.maxVioMicro, 3)} | ${fmt(r.specializationPeak, 3)} | ${fmt(r.topKShare, 3)} | ${fmt(r.trainDropRate, 3)} / ${fmt(r.evalDropRate, 3)} | ${fmt(r.tokensPerSec)} | ${fmt(r.wallSec)} |`,
    ),
    '',
    `Unigram validation loss (same tokenizer and tokens): ${fmt(a[0]?.unigramValLoss)}. MaxVio_batch and the micro-batch MaxVio are means over the last 10% of steps; max F/(K/E) is the largest domain x expert selection frequency over the uniform K/E; top-K share is the mean share of a domain's selections that go to its K most used experts (uniform: K/E = ${fmt((a[0]?.k ?? 0) / (a[0]?.numExperts ?? 1), 3)}).`,
    '',
    '## What the literature reports, and what this run shows',
    '',
    '| claim | this run | appears here |',
    '|---|---|---|',
    ...checks.map((c) => `| ${c.claim} | ${c.observed} | ${verdict(c.holds)} |`),
    '',
    `Each arm is one run with one seed. A loss difference counts as an effect only above ${LOSS_MARGIN} nats/token and a MaxVio difference only above ${VIO_MARGIN * 100}%; smaller differences cannot be told apart from run-to-run variation here.`,
    '',
    '## Plots',
    '',
    ...plots.flatMap((p) => [`### ${p}`, '', `![${p}](plots/${p}.png)`, '', `[SVG](plots/${p}.svg)`, '']),
    '## Arms',
    '',
    ...runs.map((r) => `- \`${r.arm.id}\`: ${r.arm.label} ([run report](${r.arm.id}/report.md))`),
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
  // Validate every arm's configuration before the first one starts.
  const configs = def.arms.map((arm) => armConfig(def, arm, outDir, options.sets, options.backend));
  if (configs.some((c) => c.data.valFraction === 0)) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `data.valFraction: experiment ${name} compares validation losses; expected a value > 0, got 0`,
    );
  }
  const configOf = (arm: ExperimentArm): TrainConfig => configs[def.arms.indexOf(arm)]!;
  const finished = (arm: ExperimentArm): boolean => armStatus(resolve(configOf(arm).out)) === 'finished';
  mkdirSync(outDir, { recursive: true });
  const selected = def.arms.filter((a) => options.arms === undefined || options.arms.includes(a.id));
  const toTrain = selected.filter((a) => !finished(a));
  if (jobs > 1 && toTrain.length > 1) {
    await trainArmsInProcesses(def, toTrain, outDir, options, jobs, reporter);
  } else {
    for (const arm of selected) {
      if (options.stop?.aborted === true) throw new ExperimentInterrupted(outDir);
      try {
        await trainArm(def, arm, configOf(arm), reporter, options.stop);
      } catch (e) {
        if (e instanceof RunInterrupted) throw new ExperimentInterrupted(outDir, { id: arm.id, run: e.run });
        throw e;
      }
    }
  }
  const pending = def.arms.filter((a) => !finished(a)).map((a) => a.id);
  if (pending.length > 0 || options.report === false) {
    if (pending.length > 0 && options.report !== false) {
      reporter.info(
        `experiment ${name}: arms still to run: ${pending.join(', ')}; the report is written once every arm has finished`,
      );
    }
    return {
      name,
      outDir,
      reportPath: undefined,
      arms: def.arms.filter((a) => !pending.includes(a.id)).map((a) => loadArm(a, configOf(a)).result),
      checks: [],
      pending,
    };
  }
  const runs = def.arms.map((arm) => loadArm(arm, configOf(arm)));
  const checks = checkClaims(
    name,
    runs.map((r) => r.result),
  );
  const plots = await renderComparison(outDir, runs);
  writeFileSync(
    join(outDir, 'results.json'),
    `${JSON.stringify({ experiment: name, arms: runs.map((r) => r.result), checks }, null, 2)}\n`,
  );
  const reportPath = writeComparisonReport(def, outDir, runs, checks, plots, configs[0]!);
  reporter.info(`experiment ${name}: report ${reportPath}`);
  return { name, outDir, reportPath, arms: runs.map((r) => r.result), checks, pending };
}
