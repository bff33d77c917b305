/**
 * `switchyard-train compress`: loads a trained checkpoint, evaluates it, clusters each MoE layer's
 * experts (fused similarity, functional part from training micro-batches), optionally renumbers them
 * for two-level routing, compresses them into shared bases and low-rank residuals, evaluates again,
 * optionally fine-tunes and evaluates a third time, and writes a compressed checkpoint and a report.
 *
 * Shape letters: B sequences per micro-batch, S sequence length, L MoE layers, E experts, G groups.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  activationCentroids,
  COMPRESSION_FILES,
  checkRank,
  clusterModel,
  compressModel,
  type ExpertGrouping,
  type FactorInit,
  routeByGroup,
  saveCompressedCheckpoint,
} from '@switchyard/compress';
import { loadCheckpoint, type MoETransformerLM } from '@switchyard/model';
import { SwitchyardError, tf } from '@switchyard/tensor';
import { parseConfig } from '../config/load';
import type { TrainConfig } from '../config/schema';
import { Batcher } from '../data/batcher';
import { prepareData } from '../data/prepare';
import { buildEvalSet, type EvalModelInfo, type EvalSet, evaluateModel } from '../eval/evaluate';
import type { Reporter } from '../reporter';
import { checkOutDirFree } from '../run/outdir';
import { routingShape } from '../train/setup';
import { fineTune } from './finetune';
import { type CompressReport, type LossSummary, renderCompressReport, type SimilarityRange } from './report';

/** Options of {@link runCompress}. */
export interface CompressOptions {
  /** The trained checkpoint folder. */
  readonly checkpoint: string;
  /** G: groups per MoE layer. */
  readonly groups: number;
  /** r: rank of each expert's residual. */
  readonly rank: number;
  /** Fine-tuning steps after compression (0: none). */
  readonly finetuneSteps: number;
  /** Peak learning rate of the fine-tuning. */
  readonly finetuneLr: number;
  /** Output folder: `checkpoint/` (the compressed checkpoint), `report.md`, `report.json`. */
  readonly out: string;
  /** Weight of structural similarity in the fused similarity. */
  readonly lambda: number;
  readonly equalSize: boolean;
  readonly init: FactorInit;
  /** Two-level routing keeping this many groups per token, or null. */
  readonly twoLevelGroupTopK: number | null;
  /** Training micro-batches the activation centroids are taken from. */
  readonly calibrationBatches: number;
  readonly reporter: Reporter;
}

/** Files of the output folder. */
export const COMPRESS_OUTPUTS = {
  checkpoint: 'checkpoint',
  report: 'report.md',
  json: 'report.json',
} as const;

function summary(set: EvalSet, model: MoETransformerLM, shape: EvalModelInfo): LossSummary {
  const { valLoss, perDomainLoss } = evaluateModel(model, set, shape, 0);
  return { valLoss, perDomainLoss };
}

/** Smallest, mean and largest similarity between two different experts. */
function offDiagonal(s: readonly (readonly number[])[]): SimilarityRange {
  const v = s.flatMap((row, i) => row.filter((_, j) => j !== i));
  if (v.length === 0) return { min: 1, mean: 1, max: 1 };
  return { min: Math.min(...v), mean: v.reduce((a, b) => a + b, 0) / v.length, max: Math.max(...v) };
}

/** The training configuration saved with a checkpoint (data, batch shape), or the defaults. */
function configOf(trainerState: Record<string, unknown> | undefined, dir: string): TrainConfig {
  const saved = trainerState?.config;
  return parseConfig(saved ?? {}, saved ? `trainer_state.json of ${dir}` : 'defaults');
}

/**
 * Runs the compress job and returns its report (also written to `out`).
 *
 * When to use: the `compress` command; also from scripts and experiments.
 *
 * @example
 * ```ts
 * const r = await runCompress({ checkpoint: 'runs/a/checkpoints/final', groups: 2, rank: 16, ... });
 * console.log(r.ratio.measured, r.evalLoss.after.valLoss);
 * ```
 */
export async function runCompress(o: CompressOptions): Promise<CompressReport> {
  const t0 = performance.now();
  const out = resolve(o.out);
  checkOutDirFree(out);
  const loaded = await loadCheckpoint(o.checkpoint);
  tf.dispose(Object.values(loaded.extraTensors ?? {}));
  let model = loaded.model;
  try {
    if (loaded.extraFiles?.[COMPRESSION_FILES.record]) {
      throw new SwitchyardError(
        'INVALID_ARGUMENT',
        `checkpoint ${o.checkpoint} is already compressed (it holds ${COMPRESSION_FILES.record}); compress the checkpoint it came from`,
      );
    }
    const L = model.moeLayers().length;
    if (L === 0) {
      throw new SwitchyardError(
        'INVALID_ARGUMENT',
        `checkpoint ${o.checkpoint} has no MoE layers (its config.json selects none of the ${model.config.numLayers} blocks): there are no experts to compress`,
      );
    }
    const first = model.moeLayers()[0]!.experts;
    checkRank('compressModel', o.rank, first.dModel, first.dFF);
    if (o.groups > first.numExperts || (o.equalSize && first.numExperts % o.groups !== 0)) {
      throw new SwitchyardError(
        'INVALID_ARGUMENT',
        `--groups: expected ${o.equalSize ? `a divisor of E (${first.numExperts}) for equal-size groups (--free-size lifts this)` : `an integer in [1, E] = [1, ${first.numExperts}]`}: G > E leaves a group without experts, got ${o.groups}`,
      );
    }
    const config = configOf(loaded.trainerState, o.checkpoint);
    const { k: K, numExperts: E } = routingShape(loaded.config);
    const shape: EvalModelInfo = { numMoELayers: L, numExperts: E, k: K };
    o.reporter.info(
      `compress: ${o.checkpoint} -> ${out} (${L} MoE layers of ${E} experts, G ${o.groups}, r ${o.rank})`,
    );
    const data = await prepareData(config, { tokenizer: loaded.tokenizer });
    const { seqLen: S, microBatchSize: B } = config.train;
    const evalSet = buildEvalSet(data.valStreams, S, config.eval.tokensPerDomain, config.eval.batchSize);

    const before = summary(evalSet, model, shape);
    o.reporter.info(`before: val_loss ${before.valLoss.toFixed(4)}`);
    const paramsBefore = model.numParams();

    let centroids: number[][][] | undefined;
    if (o.lambda < 1) {
      const batcher = new Batcher(data.trainStreams, {
        seqLen: S,
        batchSize: B,
        mode: config.data.batching,
        seed: config.seed,
      });
      const batches = Array.from({ length: o.calibrationBatches }, () => {
        const mb = batcher.next();
        return tf.tensor2d(mb.inputsBS, [B, S], 'int32');
      });
      try {
        centroids = activationCentroids(model, batches);
      } finally {
        tf.dispose(batches);
      }
    }
    const clustered = clusterModel(model, {
      numGroups: o.groups,
      lambda: o.lambda,
      equalSize: o.equalSize,
      ...(centroids ? { centroids } : {}),
    });
    let groupings: ExpertGrouping[] = clustered.map((c) => c.grouping);
    let orders: (readonly number[])[] | undefined;
    if (o.twoLevelGroupTopK !== null) {
      const routed = routeByGroup(model, groupings, o.twoLevelGroupTopK);
      model.dispose();
      model = routed.model;
      groupings = [...routed.groupings];
      orders = [...routed.orders];
    }
    const result = compressModel(model, {
      numGroups: o.groups,
      rank: o.rank,
      groupings,
      init: o.init,
      seed: config.seed,
    });
    const after = summary(evalSet, model, shape);
    o.reporter.info(
      `after compression: val_loss ${after.valLoss.toFixed(4)}, routed experts ${result.expertParamsBefore} -> ${result.expertParamsAfter} (${result.measuredRatio.toFixed(3)}x)`,
    );

    let finetune: CompressReport['finetune'];
    let afterFinetune: LossSummary | undefined;
    if (o.finetuneSteps > 0) {
      finetune = fineTune(model, config, data, shape, o.finetuneSteps, o.finetuneLr, o.reporter);
      o.reporter.close();
      afterFinetune = summary(evalSet, model, shape);
      o.reporter.info(
        `after fine-tuning ${o.finetuneSteps} steps: val_loss ${afterFinetune.valLoss.toFixed(4)}`,
      );
    }

    const report: CompressReport = {
      checkpoint: resolve(o.checkpoint),
      compressedCheckpoint: join(out, COMPRESS_OUTPUTS.checkpoint),
      options: {
        groups: o.groups,
        rank: o.rank,
        lambda: o.lambda,
        equalSize: o.equalSize,
        init: o.init,
        twoLevelGroupTopK: o.twoLevelGroupTopK,
        calibrationBatches: o.lambda < 1 ? o.calibrationBatches : 0,
      },
      params: {
        before: paramsBefore,
        after: model.numParams(),
        expertsBefore: result.expertParamsBefore,
        expertsAfter: result.expertParamsAfter,
      },
      ratio: {
        formula: result.formulaRatio,
        measured: result.measuredRatio,
        model: paramsBefore / model.numParams(),
      },
      layers: result.layers.map((l, i) => ({
        layer: l.layer,
        groups: l.grouping.groups,
        similarity: {
          structural: offDiagonal(clustered[i]!.similarity.structural),
          ...(clustered[i]!.similarity.functional
            ? { functional: offDiagonal(clustered[i]!.similarity.functional!) }
            : {}),
        },
        ...(orders ? { originalExpert: orders[i]! } : {}),
        errors: l.errors,
      })),
      evalLoss: { before, after, ...(afterFinetune ? { afterFinetune } : {}) },
      ...(finetune ? { finetune } : {}),
      seconds: (performance.now() - t0) / 1000,
    };
    if (!existsSync(out)) mkdirSync(out, { recursive: true });
    await saveCompressedCheckpoint(join(out, COMPRESS_OUTPUTS.checkpoint), {
      model,
      tokenizer: loaded.tokenizer,
      // The training configuration travels along, so `eval` scores with the same window length.
      trainerState: { format: 'switchyard-compressed-model', config },
      ...(orders ? { originalExperts: orders } : {}),
      made: { ...report.options, source: report.checkpoint },
    });
    writeFileSync(join(out, COMPRESS_OUTPUTS.json), `${JSON.stringify(report, null, 2)}\n`);
    writeFileSync(join(out, COMPRESS_OUTPUTS.report), renderCompressReport(report));
    return report;
  } finally {
    model.dispose();
  }
}
