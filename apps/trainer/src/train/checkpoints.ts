/**
 * A run's checkpoints: the model, tokenizer, trainer state and optimizer moments of one step, saved
 * under `checkpoints/` of the run folder; periodic ones rotated to the newest `checkpoint.keep`.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { saveRunCheckpoint } from '../compress/scratch';
import type { TrainConfig } from '../config/schema';
import type { PreparedData } from '../data/prepare';
import { checkpointName, listCheckpoints, RUN_FILES } from '../run/outdir';
import type { TrainingSetup } from './setup';
import { dataFingerprint, TRAINER_STATE_FORMAT, type TrainerState } from './state';

/** Where a run stands after a step: what a checkpoint records besides the components' own state. */
export interface RunPosition {
  /** Optimizer steps done. */
  readonly step: number;
  /** Seconds of training so far, over every resumed segment. */
  readonly elapsedSec: number;
  /** Training tokens seen so far. */
  readonly tokensSeen: number;
}

/**
 * Writes a run's checkpoints and remembers the newest one (the last good state a failed step names).
 * Every rank calls every method (saving gathers sharded optimizer moments); only rank 0 writes.
 *
 * When to use: by the run, after the steps `checkpoint.every` names and at the end.
 *
 * @example
 * ```ts
 * const checkpoints = new RunCheckpoints(config, outDir, data, setup, comm.rank === 0, undefined, 0);
 * await checkpoints.savePeriodic({ step: 100, elapsedSec: 60, tokensSeen: 204800 });
 * ```
 */
export class RunCheckpoints {
  /** The newest checkpoint of the run: the one it resumed from, then each one written. */
  last: string | undefined;
  /** The step of {@link last}. */
  lastStep: number | undefined;

  constructor(
    private readonly config: TrainConfig,
    private readonly outDir: string,
    private readonly data: PreparedData,
    private readonly setup: TrainingSetup,
    private readonly lead: boolean,
    resumedFrom: string | undefined,
    resumedAt: number,
  ) {
    this.last = resumedFrom;
    this.lastStep = resumedFrom === undefined ? undefined : resumedAt;
  }

  /** Saves `checkpoints/step-NNNNNN` and removes the oldest periodic checkpoints beyond `checkpoint.keep`. */
  async savePeriodic(at: RunPosition): Promise<string> {
    const dir = join(this.outDir, RUN_FILES.checkpoints, checkpointName(at.step));
    await this.save(dir, at);
    if (this.lead) {
      const periodic = listCheckpoints(this.outDir);
      for (const old of periodic.slice(0, Math.max(0, periodic.length - this.config.checkpoint.keep))) {
        rmSync(old.dir, { recursive: true, force: true });
      }
    }
    return dir;
  }

  /** Saves `checkpoints/final`. */
  async saveFinal(at: RunPosition): Promise<string> {
    const dir = join(this.outDir, RUN_FILES.checkpoints, RUN_FILES.finalCheckpoint);
    await this.save(dir, at);
    return dir;
  }

  private async save(dir: string, at: RunPosition): Promise<void> {
    const { model, balance, batcher, noiseRng, optimizer, experts } = this.setup;
    const { tokenizer } = this.data;
    balance.copyBiasesTo(model);
    const trainerState: TrainerState = {
      format: TRAINER_STATE_FORMAT,
      version: 1,
      step: at.step,
      config: this.config,
      batcher: batcher.getState(),
      noiseRng: noiseRng.getState(),
      balance: balance.state(),
      optimizerSteps: optimizer.stepCount,
      elapsedSec: at.elapsedSec,
      tokensSeen: at.tokensSeen,
      dataFingerprint: dataFingerprint(this.data.trainStreams),
      ...(experts ? { experts: experts.state() } : {}),
    };
    const moments = optimizer.stateTensors();
    // Under expert parallelism every rank gathers the full experts and their moments (collectives).
    const full = experts ? experts.fullMoments(moments) : moments;
    const write = async (): Promise<void> => {
      if (this.lead) await saveRunCheckpoint(dir, { model, tokenizer, trainerState, extraTensors: full });
    };
    try {
      await (experts ? experts.withFullExperts(write) : write());
    } finally {
      if (experts) experts.releaseConverted(full, moments);
      optimizer.releaseState(moments);
    }
    this.last = dir;
    this.lastStep = at.step;
  }
}
