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
import type { EvalRecord, StepRecord } from '../report/records';
import { median, writeRunReport } from '../report/report';
import { createReporter, type Reporter } from '../reporter';
import { checkOutDirFree, defaultOutDir } from '../run/outdir';
import { RunOutputs } from '../run/outputs';
import { RunCheckpoints, type RunPosition } from './checkpoints';
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
}

/** What a finished run returns. */
export interface TrainResult {
  readonly config: TrainConfig;
  readonly outDir: string;
  readonly finalCheckpoint: string;
  /** Validation loss at the last step. */
  readonly finalValLoss: number;
  /** Validation loss of the unigram model over the same tokens, same tokenizer. */
  readonly unigramValLoss: number;
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
    options.resume === undefined ? undefined : await openResume(options.resume, options.config.backend);
  const config = resumed ? resumed.state.config : options.config;
  const reporter =
    options.reporter ??
    createReporter({ mode: lead ? config.log.progress : 'quiet', every: config.log.every });
  const outDir = resumed ? resumed.runDir : defaultOutDir(config.out, config.name);
  if (!resumed && lead) checkOutDirFree(outDir);
  checkRanks(config, comm.worldSize);

  const backend = await initBackend({ backend: config.backend });
  const t0 = performance.now();
  const data = await prepareData(config, resumed ? { tokenizer: resumed.loaded.tokenizer } : {});
  if (resumed) checkSameData(resumed, data);
  const prepSec = (performance.now() - t0) / 1000;
  const setup = setUpTraining(config, comm, data, resumed);
  const start: RunPosition = resumed ? resumed.state : { step: 0, elapsedSec: 0, tokensSeen: 0 };
  const outputs = RunOutputs.open(outDir, config, resumed ? start.step : undefined, lead);
  const facts: RunFacts = { config, outDir, comm, backend, data, setup };
  for (const line of openingLines(facts, prepSec, start.step, resumed?.checkpointDir)) reporter.info(line);

  const run = new TrainingRun(facts, reporter, outputs, start, resumed?.checkpointDir);
  try {
    await run.trainSteps();
    return await run.finish();
  } catch (e) {
    run.fail(e);
    throw e;
  } finally {
    run.dispose();
  }
}

/** The loop of steps, evaluations and checkpoints of a set-up run, and its end. */
class TrainingRun {
  private readonly trainStep: TrainStep;
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
  ) {
    const { config, outDir, comm, data, setup } = facts;
    const { numMoELayers, numExperts } = setup.shape;
    this.online =
      config.compress.clusterEvery > 0
        ? new OnlineClustering(config.compress, numMoELayers, numExperts)
        : undefined;
    const online = this.online;
    this.trainStep = new TrainStep(
      config,
      setup,
      comm,
      online ? (plans) => online.observe(plans) : undefined,
    );
    this.checkpoints = new RunCheckpoints(config, outDir, data, setup, comm.rank === 0, resumedFrom);
    this.evalShard =
      comm.worldSize > 1
        ? { rank: comm.rank, worldSize: comm.worldSize, sum: (buf) => comm.allReduce(buf, 'sum') }
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
      if (config.checkpoint.every > 0 && done % config.checkpoint.every === 0 && done < totalSteps) {
        const at = { step: done, elapsedSec: rec.time, tokensSeen: this.tokensSeen };
        this.reporter.info(`checkpoint: ${await this.checkpoints.savePeriodic(at)}`);
      }
    }
  }

  /** The end of a run: final evaluation and checkpoint, run.json marked finished, the report. */
  async finish(): Promise<TrainResult> {
    const { config, outDir, comm, backend, setup } = this.facts;
    const totalSteps = config.train.steps;
    this.reporter.close();
    const finalEval = this.evaluate(totalSteps);
    const elapsed = this.elapsedSec();
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
      finalValLoss: finalEval.valLoss,
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

  /** Scores the validation set after `step` steps (with the loss-free biases in place) and records it. */
  private evaluate(step: number): EvalRecord {
    const { model, balance, evalSet, shape } = this.facts.setup;
    balance.copyBiasesTo(model);
    const rec = evaluateModel(model, evalSet, shape, step, this.evalShard);
    this.outputs.appendEval(rec);
    this.reporter.info(evalLine(rec));
    return rec;
  }

  private writeReport(finalDir: string): Promise<string> {
    const { config, outDir, setup } = this.facts;
    const { numMoELayers: L, numExperts: E, k: K } = setup.shape;
    return writeRunReport(outDir, this.outputs.steps, this.outputs.evals, {
      name: config.name,
      description: config.description,
      setup: reportSetup(this.facts),
      unigramValLoss: setup.unigramValLoss,
      finalCheckpoint: finalDir,
      uniformFrequency: E > 0 ? K / E : Number.NaN,
      numMoELayers: L,
    });
  }

  /** Seconds of training so far, over every resumed segment. */
  private elapsedSec(): number {
    return this.start.elapsedSec + (performance.now() - this.runStart) / 1000;
  }
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
    dropRate: o.dropRate,
    expertLoad: o.expertLoad,
    time,
    phaseMs: o.phaseMs,
  };
}
