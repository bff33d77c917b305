/**
 * What a run tells its user in words: the lines that open it (backend, data, model, batch), the
 * line per evaluation, the setup table of its report and the closing line.
 */
import { type Communicator, shardRange } from '@switchyard/parallel';
import type { BackendInfo } from '@switchyard/tensor';
import type { TrainConfig } from '../config/schema';
import type { PreparedData } from '../data/prepare';
import type { EvalRecord } from '../report/records';
import { formatDuration, formatRate } from '../reporter';
import type { TrainingSetup } from './setup';

/** The facts of a run its messages and report describe. */
export interface RunFacts {
  readonly config: TrainConfig;
  readonly outDir: string;
  readonly comm: Communicator;
  readonly backend: BackendInfo;
  readonly data: PreparedData;
  readonly setup: TrainingSetup;
}

/**
 * The lines that open a run: where it writes (or which checkpoint it resumes at `startStep`), the
 * backend, the data-parallel split, the data, the model and the training batch.
 */
export function openingLines(
  f: RunFacts,
  prepSec: number,
  startStep: number,
  resumedFrom: string | undefined,
): string[] {
  const { config, comm, backend, data, setup } = f;
  const R = comm.worldSize;
  const { seqLen: S, microBatchSize: B, gradAccum, steps: totalSteps } = config.train;
  const { numMoELayers: L, numExperts: E, k: K } = setup.shape;
  const lines = [
    startStep === 0
      ? `switchyard-train: run ${config.name} -> ${f.outDir}`
      : `switchyard-train: resuming ${f.outDir} at step ${startStep} from ${resumedFrom}`,
    `backend: ${backend.name} (${backend.reason})`,
  ];
  const pipe = setup.pipeline;
  if (pipe) {
    const { pipeline: P, replicas } = pipe.layout;
    const ranges = pipe.ranges.map(([from, to]) => `[${from}, ${to})`).join(' ');
    lines.push(
      `pipeline: ${config.parallel.schedule} on ${P} ranks, ${pipe.schedule.stages} stages (blocks ${ranges}), ` +
        `${gradAccum} micro-batches per step` +
        (replicas > 1 ? `; ${replicas} data-parallel replicas of ${pipe.rows} of ${B} sequences each` : ''),
    );
  } else if (R > 1) {
    const split = Array.from({ length: R }, (_, r) => {
      const sr = shardRange(B, r, R);
      return sr.end - sr.start;
    }).join('/');
    const adam =
      setup.optimizer.placement === 'host'
        ? `sharded ${R} ways (ZeRO-1, on the host)`
        : 'on every rank (backend)';
    lines.push(
      `data parallel: ${R} ranks (${comm.transport}), ${B} sequences per micro-batch split ${split}; AdamW ${adam}`,
    );
  }
  if (setup.experts) lines.push(setup.experts.describe());
  const trainTokens = data.trainStreams.reduce((a, s) => a + s.tokens.length, 0);
  const balance = config.balance;
  const balanceArgs =
    balance.method === 'loss-free'
      ? ` (u ${balance.biasUpdateRate})`
      : balance.method === 'none'
        ? ''
        : ` (alpha ${balance.alpha})`;
  lines.push(
    `data: ${data.source}: ${data.split.train.length} training / ${data.split.val.length} validation texts in ` +
      `${data.split.domains.length} domains; ${trainTokens} training tokens; tokenizer vocab ${data.tokenizer.vocabSize} ` +
      `(prepared in ${prepSec.toFixed(1)} s)`,
    `model: ${config.model.preset} preset, ${(setup.model.numParams() / 1e6).toFixed(2)}M parameters ` +
      `(${(setup.model.activeParamsPerToken() / 1e6).toFixed(2)}M active per token), ${setup.modelConfig.numLayers} blocks, ` +
      `${L} MoE layers of ${E} experts (${setup.modelConfig.moe.router.type}, top-${K})`,
    `training: ${totalSteps} steps x ${gradAccum} micro-batch(es) x ${B} x ${S} = ${B * S * gradAccum} tokens/step, ` +
      `${config.data.batching} batches, balance ${balance.method}${balanceArgs}` +
      (setup.unigramValLoss === undefined
        ? '; no validation set (data.valFraction = 0): no evaluations'
        : `; validation ${setup.evalSet.tokens} tokens; unigram val_loss ${setup.unigramValLoss.toFixed(4)}`),
  );
  return lines;
}

/**
 * The line of one evaluation: validation loss, then (for a model with MoE layers) MaxVio_global,
 * specialisation and the drop rate when tokens were dropped.
 */
export function evalLine(rec: EvalRecord): string {
  const parts = [`eval step ${rec.step}: val_loss ${rec.valLoss.toFixed(4)}`];
  if (Number.isFinite(rec.maxVioGlobal)) parts.push(`MaxVio_global ${rec.maxVioGlobal.toFixed(3)}`);
  if (Number.isFinite(rec.specializationPeak)) {
    parts.push(`specialisation peak ${rec.specializationPeak.toFixed(2)}x uniform`);
  }
  if (rec.dropRate > 0) parts.push(`drop rate ${rec.dropRate.toFixed(3)}`);
  for (const [id, v] of Object.entries(rec.routingVariants ?? {})) {
    parts.push(
      `${id} routing: val_loss ${v.valLoss.toFixed(4)}${v.dropRate > 0 ? `, drop rate ${v.dropRate.toFixed(3)}` : ''}`,
    );
  }
  return parts.join(' | ');
}

/** The setup table of the run's report.md: data, tokenizer, model, batch, optimizer, balance, backend, seed. */
export function reportSetup(f: RunFacts): [string, string][] {
  const { config, comm, backend, data, setup } = f;
  const R = comm.worldSize;
  const { modelConfig, optimizer } = setup;
  const { numExperts: E, k: K } = setup.shape;
  const { seqLen: S, microBatchSize: B, gradAccum } = config.train;
  return [
    ['data', `${data.source}; ${data.split.domains.length} domains; ${config.data.batching} micro-batches`],
    ['tokenizer', `byte-level BPE, ${data.tokenizer.vocabSize} ids`],
    [
      'model',
      `${config.model.preset} preset: ${modelConfig.numLayers} blocks, width ${modelConfig.dModel}, ` +
        `${E} experts top-${K} (${modelConfig.moe.router.type}), ${(setup.model.numParams() / 1e6).toFixed(2)}M parameters`,
    ],
    ['batch', `${gradAccum} x ${B} sequences x ${S} tokens per optimizer step`],
    [
      'optimizer',
      `AdamW lr ${config.train.lr} (warm-up ${config.train.warmupSteps}, cosine to ${config.train.minLrRatio}x), ` +
        `wd ${config.train.weightDecay}, clip ${config.train.clipNorm}, on the ${optimizer.placement}` +
        (optimizer.placement === 'host' && R > 1 ? ` (sharded over ${R} ranks)` : ''),
    ],
    [
      'balance',
      `${config.balance.method}, alpha ${config.balance.alpha}, u ${config.balance.biasUpdateRate}, z-loss ${config.balance.zLoss}`,
    ],
    [
      'backend',
      setup.pipeline
        ? `${backend.name}, ${R} ranks: ${config.parallel.schedule} pipeline of ${setup.pipeline.layout.pipeline} ranks x ${setup.pipeline.layout.replicas} data-parallel replicas`
        : R > 1
          ? `${backend.name}, ${R} data-parallel ranks` +
            (setup.experts ? `, experts in groups of ${config.parallel.expertParallel}` : '')
          : backend.name,
    ],
    ['seed', String(config.seed)],
  ];
}

/** The closing line: steps, wall time, median tokens/s, and the report when one was written. */
export function doneLine(
  totalSteps: number,
  elapsedSec: number,
  tokensPerSec: number,
  reportPath: string | undefined,
): string {
  return (
    `done: ${totalSteps} steps in ${formatDuration(elapsedSec)}, ${formatRate(tokensPerSec)} tokens/s (median)` +
    (reportPath ? `; report ${reportPath}` : '')
  );
}
