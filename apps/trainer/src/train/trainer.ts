/**
 * The training run around the step (as torchtitan's `Trainer.train` around `train_step`): resume,
 * setup of data, tokenizer and model, the loop of steps (see `step.ts`) with periodic evaluation and
 * checkpoints, the run's records (`run.json`, `metrics.jsonl`, `eval.jsonl`), and at the end the
 * final evaluation, checkpoint and report.
 *
 * Under data parallelism (a `comm` of R ranks) every rank runs the same run on its share of each
 * micro-batch; only rank 0 writes the output folder.
 */
import { type Communicator, createLocalCommunicator } from '@switchyard/parallel';
import { type BackendInfo, initBackend } from '@switchyard/tensor';
import { OnlineClustering } from '../compress/online';
import type { TrainConfig } from '../config/schema';
import { prepareData } from '../data/prepare';
import { type EvalShard, evaluateModel } from '../eval/evaluate';
import { DEFAULT_SAMPLE_OPTIONS, generateCommand, sampleText } from '../eval/generate';
import { evaluateRoutingVariants } from '../eval/variants';
import type { EvalRecord, StepRecord } from '../report/records';
import { median, writeRunReport } from '../report/report';
import { createReporter, type Reporter } from '../reporter';
import { checkOutDirFree, defaultOutDir } from '../run/outdir';
import { RunOutputs } from '../run/outputs';
import { RunCheckpoints, type RunPosition } from './checkpoints';
import { checkExpertLayout } from './expert-parallel';
import { PipelineTrainStep } from './pipeline-step';
import { checkSameData, openResume } from './resume';
import { checkRanks, setUpTraining } from './setup';
import { type StepOutcome, TrainStep } from './step';
import { doneLine, evalLine, openingLines, type RunFacts, reportSetup } from './summary';

/** Options of {@link train}. */
export interface TrainOptions {
  /** The run's configuration (ignored when resuming: the checkpoint's own configuration is used). */
  readonly config: TrainConfig;
  /** A run folder or checkpoint folder to continue. */
  readonly resume?: string;
  /** Where messages go (default: a reporter following `config.log.progress`; ranks other than 0 stay quiet). */
  readonly reporter?: Reporter;
  /** Collectives among data-parallel ranks (from `launch()`); default: one rank in this thread. */
  readonly comm?: Communicator;
  /**
   * When resuming: parallel settings replacing the saved run's (`--pipeline`, `--schedule`,
   * `--expert-parallel`); a checkpoint holds the whole model, so a run continues under any layout the
   * ranks allow.
   */
  readonly parallel?: Partial<TrainConfig['parallel']>;
  /** With `resume`: a new `train.steps`, to train a run (finished or not) longer. */
  readonly extendSteps?: number;
  /**
   * Checked after every step: once `aborted`, the run saves a checkpoint (unless the newest one is
   * of this step), marks run.json `interrupted` and rejects with {@link RunInterrupted}. Ranks
   * agree on the step to stop at. An AbortSignal fits.
   */
  readonly stop?: { readonly aborted: boolean };
}

/** Where an interrupted run stopped, and what continues it. */
export interface InterruptedRun {
  readonly runDir: string;
  /** Optimizer steps done. */
  readonly step: number;
  readonly totalSteps: number;
  /** The checkpoint `--resume` continues from (saved at the interruption, or the newest one). */
  readonly checkpoint: string | undefined;
  /** True when the checkpoint was saved at the interruption. */
  readonly saved: boolean;
}

/** What {@link train} rejects with when `stop` was aborted. */
export class RunInterrupted extends Error {
  constructor(readonly run: InterruptedRun) {
    super(`training interrupted at step ${run.step} of ${run.totalSteps}`);
    this.name = 'RunInterrupted';
  }
}

/** What a finished run returns. */
export interface TrainResult {
  readonly config: TrainConfig;
  readonly outDir: string;
  readonly finalCheckpoint: string;
  /** Validation loss at the last step; undefined without a validation set (`data.valFraction` 0). */
  readonly finalValLoss: number | undefined;
  /** Validation loss of the unigram model over the same tokens, same tokenizer; undefined without a validation set. */
  readonly unigramValLoss: number | undefined;
  readonly steps: readonly StepRecord[];
  readonly evals: readonly EvalRecord[];
  /** Median training tokens/s (global batch, all ranks together) over the steps of this process. */
  readonly tokensPerSec: number;
  /** Data-parallel ranks the run trained on. */
  readonly ranks: number;
  /** Model forward FLOPs per token at the training sequence length. */
  readonly flopsPerToken: number;
  readonly numParams: number;
  readonly backend: BackendInfo;
  readonly reportPath: string | undefined;
}

/**
 * Trains a model as configured (or continues a run) and writes its output folder.
 *
 * When to use: the `switchyard-train` command's job; also callable from scripts and tests.
 *
 * @example
 * ```ts
 * const result = await train({ config: resolveConfig({ preset: 'tiny' }) });
 * console.log(result.finalValLoss, result.unigramValLoss, result.finalCheckpoint);
 * ```
 */
export async function train(options: TrainOptions): Promise<TrainResult> {
  const comm = options.comm ?? createLocalCommunicator();
  const lead = comm.rank === 0;
  const resumed =
    options.resume === undefined
      ? undefined
      : await openResume(options.resume, options.config.backend, options.extendSteps);
  const config = resumed ? withLayout(resumed.state.config, options.parallel) : options.config;
  const reporter =
    options.reporter ??
    createReporter({ mode: lead ? config.log.progress : 'quiet', every: config.log.every });
  const outDir = resumed ? resumed.runDir : defaultOutDir(config.out, config.name);
  if (!resumed && lead) checkOutDirFree(outDir);
  checkRanks(config, comm.worldSize);
  checkExpertLayout(config, comm.worldSize);

  const backend = await initBackend({ backend: config.backend });
  const t0 = performance.now();
  const data = await prepareData(config, resumed ? { tokenizer: resumed.loaded.tokenizer } : {});
  if (resumed) checkSameData(resumed, data);
  const prepSec = (performance.now() - t0) / 1000;
  const setup = setUpTraining(config, comm, data, resumed);
  const start: RunPosition = resumed ? resumed.state : { step: 0, elapsedSec: 0, tokensSeen: 0 };
  const outputs = RunOutputs.open(outDir, config, resumed ? start.step : undefined, lead);
  const facts: RunFacts = { config, outDir, comm, backend, data, setup };
  for (const s of resumed?.skipped ?? []) {
    reporter.warn(`checkpoint ${s.dir} does not verify (${s.reason}); resuming from an older one`);
  }
  for (const line of openingLines(facts, prepSec, start.step, resumed?.checkpointDir)) reporter.info(line);
  if (resumed?.extendedFrom !== undefined) {
    reporter.info(
      `extending the run from ${resumed.extendedFrom} to ${config.train.steps} steps: the learning-rate schedule now ends at step ${config.train.steps}`,
    );
  }

  const run = new TrainingRun(facts, reporter, outputs, start, resumed?.checkpointDir, options.stop);
  try {
    await run.trainSteps();
    return await run.finish();
  } catch (e) {
    if (!(e instanceof RunInterrupted)) run.fail(e);
    throw e;
  } finally {
    run.dispose();
  }
}

/** The loop of steps, evaluations and checkpoints of a set-up run, and its end. */
class TrainingRun {
  private readonly trainStep: TrainStep | PipelineTrainStep;
  /** `compress.clusterEvery`: periodic expert clustering and its stability. */
  private readonly online: OnlineClustering | undefined;
  private readonly checkpoints: RunCheckpoints;
  /**
   * Each rank scores every R-th validation batch on its identical replica and one all-reduce
   * combines the sums, so every rank returns the record of the whole set.
   */
  private readonly evalShard: EvalShard | undefined;
  private readonly runStart = performance.now();
  /** Tokens/s of each step this process trained. */
  private readonly rates: number[] = [];
  private tokensSeen: number;

  constructor(
    private readonly facts: RunFacts,
    private readonly reporter: Reporter,
    private readonly outputs: RunOutputs,
    private readonly start: RunPosition,
    resumedFrom: string | undefined,
    private readonly stop: { readonly aborted: boolean } | undefined,
  ) {
    const { config, outDir, comm, data, setup } = facts;
    const { numMoELayers, numExperts } = setup.shape;
    this.online =
      config.compress.clusterEvery > 0
        ? new OnlineClustering(config.compress, numMoELayers, numExperts)
        : undefined;
    const online = this.online;
    this.trainStep = setup.pipeline
      ? new PipelineTrainStep(config, setup, comm)
      : new TrainStep(config, setup, comm, online ? (plans) => online.observe(plans) : undefined);
    this.checkpoints = new RunCheckpoints(
      config,
      outDir,
      data,
      setup,
      comm.rank === 0,
      resumedFrom,
      start.step,
    );
    this.evalShard =
      comm.worldSize > 1
        ? {
            rank: comm.rank,
            worldSize: comm.worldSize,
            sum: (buf) => comm.allReduce(buf, 'sum'),
            // expert-parallel forwards are collectives: every rank runs as many as the others
            lockstep: setup.experts !== undefined,
          }
        : undefined;
    this.tokensSeen = start.tokensSeen;
  }

  /** Trains the remaining steps, evaluating and saving checkpoints as `eval.every` and `checkpoint.every` say. */
  async trainSteps(): Promise<void> {
    const { config } = this.facts;
    const { seqLen: S, microBatchSize: B, gradAccum, steps: totalSteps } = config.train;
    for (let step = this.start.step; step < totalSteps; step++) {
      const outcome = this.trainStep.run(step, this.checkpoints.last);
      this.tokensSeen += B * S * gradAccum;
      this.rates.push(outcome.tokensPerSec);
      const done = step + 1;
      const clustering = this.online?.afterStep(done, this.facts.setup.model);
      const rec = {
        ...stepRecord(done, outcome, this.tokensSeen, this.elapsedSec()),
        ...(clustering ? { clustering } : {}),
      };
      this.outputs.appendStep(rec);
      this.reporter.progress({
        step: done,
        totalSteps,
        loss: rec.loss,
        lr: rec.lr,
        tokensPerSec: rec.tokensPerSec,
        maxVioBatch: rec.maxVioBatch,
        elapsedSec: (performance.now() - this.runStart) / 1000,
        stepsThisRun: done - this.start.step,
      });
      if (config.eval.every > 0 && done % config.eval.every === 0 && done < totalSteps) this.evaluate(done);
      const at = { step: done, elapsedSec: rec.time, tokensSeen: this.tokensSeen };
      if (config.checkpoint.every > 0 && done % config.checkpoint.every === 0 && done < totalSteps) {
        this.syncModel();
        this.reporter.info(`checkpoint: ${await this.checkpoints.savePeriodic(at)}`);
      }
      // A step computes without yielding: let signal handlers (Ctrl-C) run before asking whether to stop.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (done < totalSteps && this.stopRequested()) await this.interrupt(at);
    }
  }

  /** Whether to stop after this step; ranks agree (any rank's request stops them all at the same step). */
  private stopRequested(): boolean {
    const here = this.stop?.aborted === true ? 1 : 0;
    const { comm } = this.facts;
    return comm.worldSize > 1 ? comm.allReduce(Float32Array.of(here), 'max')[0] === 1 : here === 1;
  }

  /** Stops at `at`: a checkpoint unless the newest is of this step, run.json `interrupted`, then RunInterrupted. */
  private async interrupt(at: RunPosition): Promise<never> {
    this.reporter.close();
    const saved = this.checkpoints.lastStep !== at.step;
    if (saved) {
      this.syncModel();
      this.reporter.info(`checkpoint: ${await this.checkpoints.savePeriodic(at)}`);
    }
    this.outputs.interrupted(at.step);
    throw new RunInterrupted({
      runDir: this.facts.outDir,
      step: at.step,
      totalSteps: this.facts.config.train.steps,
      checkpoint: this.checkpoints.last,
      saved,
    });
  }

  /** The end of a run: final evaluation and checkpoint, run.json marked finished, the report. */
  async finish(): Promise<TrainResult> {
    const { config, outDir, comm, backend, setup } = this.facts;
    const totalSteps = config.train.steps;
    this.reporter.close();
    const finalEval = this.evaluate(totalSteps, true);
    const elapsed = this.elapsedSec();
    this.syncModel();
    const finalDir = await this.checkpoints.saveFinal({
      step: totalSteps,
      elapsedSec: elapsed,
      tokensSeen: this.tokensSeen,
    });
    this.outputs.finished(finalDir, setup.unigramValLoss);
    const reportPath = config.log.plots && comm.rank === 0 ? await this.writeReport(finalDir) : undefined;
    const tokensPerSec = median(this.rates);
    this.reporter.info(doneLine(totalSteps, elapsed, tokensPerSec, reportPath));
    return {
      config,
      outDir,
      finalCheckpoint: finalDir,
      finalValLoss: finalEval?.valLoss,
      unigramValLoss: setup.unigramValLoss,
      steps: this.outputs.steps,
      evals: this.outputs.evals,
      tokensPerSec,
      ranks: comm.worldSize,
      flopsPerToken: setup.model.flopsPerToken(config.train.seqLen),
      numParams: setup.model.numParams(),
      backend,
      reportPath,
    };
  }

  /** Ends a failed run: the progress display closed, run.json marked failed. */
  fail(e: unknown): void {
    this.reporter.close();
    this.outputs.failed(e);
  }

  /** Releases the gradients of an unfinished step, the optimizer and the model. */
  dispose(): void {
    this.trainStep.dispose();
    this.facts.setup.optimizer.dispose();
    this.facts.setup.model.dispose();
  }

  /**
   * Scores the validation set after `step` steps (with the loss-free biases in place) and records
   * it, the final evaluation with every `eval.routingVariants` entry; nothing without a validation set.
   */
  private evaluate(step: number, final = false): EvalRecord | undefined {
    const { model, modelConfig, balance, evalSet, shape } = this.facts.setup;
    const { routingVariants } = this.facts.config.eval;
    if (evalSet.tokens === 0) return undefined;
    this.syncModel();
    balance.copyBiasesTo(model);
    let rec = evaluateModel(model, evalSet, shape, step, this.evalShard);
    if (final && Object.keys(routingVariants).length > 0) {
      const variants = evaluateRoutingVariants(
        model,
        modelConfig,
        routingVariants,
        evalSet,
        shape,
        step,
        this.evalShard,
      );
      rec = { ...rec, routingVariants: variants };
    }
    this.outputs.appendEval(rec);
    this.reporter.info(evalLine(rec));
    return rec;
  }

  private writeReport(finalDir: string): Promise<string> {
    const { config, outDir, setup, data } = this.facts;
    const { numMoELayers: L, numExperts: E, k: K } = setup.shape;
    const { samplePrompt, sampleTokens } = config.log;
    const sampling = { ...DEFAULT_SAMPLE_OPTIONS, maxTokens: sampleTokens, seed: config.seed };
    const sample =
      sampleTokens > 0
        ? {
            command: generateCommand(finalDir, samplePrompt, sampling),
            sample: sampleText(setup.model, data.tokenizer, samplePrompt, sampling),
          }
        : undefined;
    return writeRunReport(outDir, this.outputs.steps, this.outputs.evals, {
      name: config.name,
      description: config.description,
      setup: reportSetup(this.facts),
      unigramValLoss: setup.unigramValLoss,
      finalCheckpoint: finalDir,
      uniformFrequency: E > 0 ? K / E : Number.NaN,
      numMoELayers: L,
      ...(sample ? { sample } : {}),
    });
  }

  /** Under a pipeline, gives every rank the current model (before evaluations and checkpoints). */
  private syncModel(): void {
    if (this.trainStep instanceof PipelineTrainStep) this.trainStep.syncModel();
  }

  /** Seconds of training so far, over every resumed segment. */
  private elapsedSec(): number {
    return this.start.elapsedSec + (performance.now() - this.runStart) / 1000;
  }
}

/** A saved configuration with the parallel settings a resumed run was started with. */
function withLayout(config: TrainConfig, layout: Partial<TrainConfig['parallel']> | undefined): TrainConfig {
  if (layout === undefined || Object.keys(layout).length === 0) return config;
  return { ...config, parallel: { ...config.parallel, ...layout } };
}

/** The metrics.jsonl record of step `step` (1-based), fields in their file order. */
function stepRecord(step: number, o: StepOutcome, tokens: number, time: number): StepRecord {
  return {
    step,
    loss: o.loss,
    auxLoss: o.auxLoss,
    lr: o.lr,
    gradNorm: o.gradNorm,
    tokensPerSec: o.tokensPerSec,
    tokens,
    maxVioBatch: o.maxVioBatch,
    maxVioMicro: o.maxVioMicro,
    ...(o.maxVioSeq !== undefined ? { maxVioSeq: o.maxVioSeq } : {}),
    dropRate: o.dropRate,
    expertLoad: o.expertLoad,
    ...(o.expertBalance !== undefined ? { expertBalance: o.expertBalance } : {}),
    ...(o.rebalance !== undefined ? { rebalance: o.rebalance } : {}),
    time,
    phaseMs: o.phaseMs,
  };
}
