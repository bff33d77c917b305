/**
 * The `compress` experiment: evaluation loss against the compression ratio of the routed experts of
 * one trained model (the default run unless a checkpoint is given), over G and r, for shared-basis
 * low-rank experts clustered by fused, structural-only and functional-only similarity, against two
 * baselines at comparable parameter counts: experts merged by averaging within their groups (a
 * basis and no residual), and per-expert low-rank experts without a shared basis (the rank r' that
 * gives the same parameters as G bases plus rank-r residuals).
 *
 * Shape letters: E experts, D model width, F expert hidden width, G groups, r rank, m matrices per expert.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  activationCentroids,
  clusterModel,
  compressModel,
  DEFAULT_LAMBDA,
  type ExpertGrouping,
  reconstruct,
  svd,
} from '@switchyard/compress';
import { expertWeightsOf, RoutedExperts } from '@switchyard/experts';
import { loadCheckpoint, type MoETransformerLM } from '@switchyard/model';
import { tf } from '@switchyard/tensor';
import { parseConfig, resolveConfig } from '../config/load';
import type { TrainConfig } from '../config/schema';
import { Batcher } from '../data/batcher';
import { type PreparedData, prepareData } from '../data/prepare';
import { buildEvalSet, type EvalModelInfo, type EvalSet, evaluateModel } from '../eval/evaluate';
import { lineChart, type SeriesPoint } from '../report/charts';
import { renderChart } from '../report/render';
import { fmt } from '../report/report';
import type { Reporter } from '../reporter';
import { routingShape } from '../train/setup';
import { train } from '../train/trainer';

/** Options of {@link runCompressExperiment}. */
export interface CompressExperimentOptions {
  /** A trained checkpoint; when absent the default run (`--preset small`) is trained into `out/base`. */
  readonly checkpoint?: string;
  readonly out: string;
  /** G values (each must divide E). */
  readonly groups: readonly number[];
  /** r values. */
  readonly ranks: readonly number[];
  /** Training micro-batches for the activation centroids. */
  readonly calibrationBatches: number;
  readonly reporter: Reporter;
}

/** One arm's result. */
export interface CompressArm {
  readonly id: string;
  /** `shared-basis` (clustering by `lambda`), `merged` (averaging) or `low-rank` (no shared basis), or `uncompressed`. */
  readonly method: 'uncompressed' | 'shared-basis' | 'merged' | 'low-rank';
  readonly lambda?: number;
  readonly groups?: number;
  readonly rank?: number;
  /** Routed-expert parameters of all MoE layers. */
  readonly expertParams: number;
  /** Uncompressed routed-expert parameters / expertParams. */
  readonly ratio: number;
  readonly valLoss: number;
  /** Mean relative reconstruction error of the experts. */
  readonly meanError: number;
}

/** Everything the experiment reports. */
export interface CompressExperimentResult {
  readonly checkpoint: string;
  readonly arms: readonly CompressArm[];
  readonly seconds: number;
}

/** The arms' parameters by formula: m matrices of D x F per expert. */
function paramsOf(
  kind: 'shared-basis' | 'merged' | 'low-rank',
  L: number,
  E: number,
  m: number,
  D: number,
  F: number,
  G: number,
  r: number,
): number {
  if (kind === 'merged') return L * m * G * D * F;
  if (kind === 'low-rank') return L * m * E * r * (D + F);
  return L * m * (G * D * F + E * r * (D + F));
}

/** Replaces every MoE layer's experts with `make(weights of layer i)` (host arrays per matrix, [E, I, O]). */
function replaceExperts(
  model: MoETransformerLM,
  make: (
    layer: number,
    w: Record<string, { data: Float32Array; I: number; O: number }>,
  ) => Record<string, Float32Array>,
): number {
  let errSum = 0;
  let errCount = 0;
  model.moeLayers().forEach((layer, i) => {
    const bank = layer.experts;
    const vars = expertWeightsOf(bank.variables);
    const named: Record<string, tf.Tensor> = {
      w1: vars.w1EDF,
      ...(vars.w3EDF ? { w3: vars.w3EDF } : {}),
      w2: vars.w2EFD,
    };
    const host = Object.fromEntries(
      Object.entries(named).map(([n, t]) => [
        n,
        { data: t.dataSync() as Float32Array, I: t.shape[1]!, O: t.shape[2]! },
      ]),
    );
    const next = make(i, host);
    const E = bank.numExperts;
    for (let e = 0; e < E; e++) {
      let se = 0;
      let sn = 0;
      for (const [n, h] of Object.entries(host)) {
        const size = h.I * h.O;
        for (let k = e * size; k < (e + 1) * size; k++) {
          se += (h.data[k]! - next[n]![k]!) ** 2;
          sn += h.data[k]! ** 2;
        }
      }
      errSum += Math.sqrt(se / sn);
      errCount++;
    }
    const t = (n: string) => tf.tensor3d(next[n]!, [E, host[n]!.I, host[n]!.O]);
    const w = { w1EDF: t('w1'), ...(host.w3 ? { w3EDF: t('w3') } : {}), w2EFD: t('w2') };
    const full = new RoutedExperts(
      { numExperts: E, dModel: bank.dModel, dFF: bank.dFF, activation: bank.activation },
      w,
    );
    tf.dispose(Object.values(w));
    layer.setExperts(full).dispose();
  });
  return errSum / errCount;
}

/** Experts replaced by their group's mean. */
function mergeByAveraging(model: MoETransformerLM, groupings: readonly ExpertGrouping[]): number {
  return replaceExperts(model, (i, host) =>
    Object.fromEntries(
      Object.entries(host).map(([n, h]) => {
        const size = h.I * h.O;
        const out = new Float32Array(h.data.length);
        for (const members of groupings[i]!.groups) {
          const mean = new Float32Array(size);
          for (const e of members)
            for (let k = 0; k < size; k++) mean[k]! += h.data[e * size + k]! / members.length;
          for (const e of members) out.set(mean, e * size);
        }
        return [n, out];
      }),
    ),
  );
}

/** Experts replaced by their own rank-r truncated SVD (no shared basis). */
function perExpertLowRank(model: MoETransformerLM, r: number): number {
  return replaceExperts(model, (_, host) =>
    Object.fromEntries(
      Object.entries(host).map(([n, h]) => {
        const size = h.I * h.O;
        const out = new Float32Array(h.data.length);
        for (let e = 0; e < h.data.length / size; e++) {
          out.set(reconstruct(svd(h.data.subarray(e * size, (e + 1) * size), h.I, h.O, r)), e * size);
        }
        return [n, out];
      }),
    ),
  );
}

/**
 * Runs the experiment and writes `out/results.json`, `out/report.md` and `out/plots/loss-vs-ratio.*`.
 *
 * @example
 * ```ts
 * await runCompressExperiment({ out: 'experiments/compress', groups: [2, 4], ranks: [4, 16], calibrationBatches: 8, reporter });
 * ```
 */
export async function runCompressExperiment(o: CompressExperimentOptions): Promise<CompressExperimentResult> {
  const t0 = performance.now();
  const out = resolve(o.out);
  mkdirSync(out, { recursive: true });
  let checkpoint = o.checkpoint;
  if (checkpoint === undefined) {
    o.reporter.info('training the default model (preset small) into base/');
    const config = resolveConfig({
      preset: 'small',
      sets: [`out=${join(out, 'base')}`, 'log.progress=lines'],
    });
    checkpoint = (await train({ config, reporter: o.reporter })).finalCheckpoint;
  }
  const first = await loadCheckpoint(checkpoint);
  const config: TrainConfig = parseConfig(
    (first.trainerState as { config?: unknown } | undefined)?.config ?? {},
    `trainer_state.json of ${checkpoint}`,
  );
  const data: PreparedData = await prepareData(config, { tokenizer: first.tokenizer });
  const { seqLen: S, microBatchSize: B } = config.train;
  const evalSet: EvalSet = buildEvalSet(
    data.valStreams,
    S,
    config.eval.tokensPerDomain,
    config.eval.batchSize,
  );
  const L = first.model.moeLayers().length;
  const { k: K, numExperts: E } = routingShape(first.config);
  const shape: EvalModelInfo = { numMoELayers: L, numExperts: E, k: K };
  const { dModel: D, dFF: F, activation } = first.model.moeLayers()[0]!.experts;
  const m = activation === 'swiglu' ? 3 : 2;
  const batcher = new Batcher(data.trainStreams, {
    seqLen: S,
    batchSize: B,
    mode: config.data.batching,
    seed: config.seed,
  });
  const batches = Array.from({ length: o.calibrationBatches }, () =>
    tf.tensor2d(batcher.next().inputsBS, [B, S], 'int32'),
  );
  const centroids = activationCentroids(first.model, batches);
  tf.dispose(batches);
  const full = paramsOf('merged', L, E, m, D, F, E, 0);
  const arms: CompressArm[] = [];
  const record = (arm: Omit<CompressArm, 'valLoss' | 'ratio'>, model: MoETransformerLM) => {
    const valLoss = evaluateModel(model, evalSet, shape, 0).valLoss;
    const done = { ...arm, ratio: full / arm.expertParams, valLoss };
    arms.push(done);
    o.reporter.info(
      `${done.id}: ratio ${done.ratio.toFixed(3)}x, val_loss ${valLoss.toFixed(4)}, mean error ${arm.meanError.toFixed(4)}`,
    );
    writeFileSync(join(out, 'results.json'), `${JSON.stringify({ checkpoint, arms }, null, 2)}\n`);
  };
  const withModel = async (fn: (model: MoETransformerLM) => void) => {
    const { model } = await loadCheckpoint(checkpoint!);
    try {
      fn(model);
    } finally {
      model.dispose();
    }
  };
  record({ id: 'uncompressed', method: 'uncompressed', expertParams: full, meanError: 0 }, first.model);
  first.model.dispose();

  const lambdas: [string, number][] = [
    ['fused', DEFAULT_LAMBDA],
    ['structural', 1],
    ['functional', 0],
  ];
  for (const G of o.groups) {
    for (const r of o.ranks) {
      for (const [name, lambda] of lambdas) {
        await withModel((model) => {
          const groupings = clusterModel(model, { numGroups: G, lambda, equalSize: true, centroids }).map(
            (c) => c.grouping,
          );
          const res = compressModel(model, { numGroups: G, rank: r, groupings });
          const errors = res.layers.flatMap((l) => l.errors.map((e) => e.total));
          record(
            {
              id: `${name}-g${G}-r${r}`,
              method: 'shared-basis',
              lambda,
              groups: G,
              rank: r,
              expertParams: res.expertParamsAfter,
              meanError: errors.reduce((a, b) => a + b, 0) / errors.length,
            },
            model,
          );
        });
      }
      // Per-expert low rank at the same parameter count as G bases + rank-r residuals.
      const rEq = Math.min(Math.min(D, F), Math.round(r + (G * D * F) / (E * (D + F))));
      await withModel((model) => {
        const meanError = perExpertLowRank(model, rEq);
        record(
          {
            id: `low-rank-r${rEq}`,
            method: 'low-rank',
            rank: rEq,
            expertParams: paramsOf('low-rank', L, E, m, D, F, G, rEq),
            meanError,
          },
          model,
        );
      });
    }
    await withModel((model) => {
      const groupings = clusterModel(model, {
        numGroups: G,
        lambda: DEFAULT_LAMBDA,
        equalSize: true,
        centroids,
      }).map((c) => c.grouping);
      const meanError = mergeByAveraging(model, groupings);
      record(
        {
          id: `merged-g${G}`,
          method: 'merged',
          groups: G,
          expertParams: paramsOf('merged', L, E, m, D, F, G, 0),
          meanError,
        },
        model,
      );
    });
  }
  const result: CompressExperimentResult = { checkpoint, arms, seconds: (performance.now() - t0) / 1000 };
  writeFileSync(join(out, 'results.json'), `${JSON.stringify(result, null, 2)}\n`);
  await plotExperiment(result, out);
  writeFileSync(join(out, 'report.md'), renderExperiment(result));
  return result;
}

const CLUSTERING: Readonly<Record<string, string>> = { '1': 'structural', '0': 'functional' };

/** `out/plots/loss-vs-ratio.{svg,png}`: one line per method (shared basis: per clustering and rank). */
export async function plotExperiment(result: CompressExperimentResult, out: string): Promise<void> {
  const series = (a: CompressArm) =>
    a.method === 'shared-basis'
      ? `${CLUSTERING[String(a.lambda)] ?? 'fused'}, r ${a.rank}`
      : a.method === 'low-rank'
        ? 'low rank, no basis'
        : 'merged';
  const points: SeriesPoint[] = result.arms
    .filter((a) => a.method !== 'uncompressed')
    .map((a) => ({ x: a.ratio, y: a.valLoss, series: series(a) }))
    .sort((p, q) => p.x - q.x);
  await renderChart(
    lineChart(points, {
      title: 'Validation loss against the compression ratio of the routed experts',
      xTitle: 'routed-expert parameters, uncompressed / compressed',
      yTitle: 'validation loss (nats)',
      points: true,
      rules: [{ y: result.arms[0]!.valLoss, label: 'uncompressed' }],
    }),
    join(out, 'plots', 'loss-vs-ratio'),
  );
}

/** report.md of the experiment. */
export function renderExperiment(r: CompressExperimentResult): string {
  const rows = [...r.arms].sort((a, b) => a.ratio - b.ratio || a.valLoss - b.valLoss);
  return [
    '# Compressed experts: loss against compression ratio',
    '',
    `Checkpoint \`${r.checkpoint}\`; ${fmt(r.seconds, 3)} s. Ratio: routed-expert parameters of the`,
    "uncompressed model over the arm's (by formula: G bases + E rank-r residuals per matrix; merged: G",
    'bases; low rank: E rank-r factor pairs). Error: mean over experts of the relative Frobenius error.',
    '',
    '| arm | method | lambda | G | r | ratio | val loss | mean error |',
    '|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (a) =>
        `| ${a.id} | ${a.method} | ${a.lambda ?? ''} | ${a.groups ?? ''} | ${a.rank ?? ''} | ${fmt(a.ratio)}x | ${fmt(a.valLoss)} | ${fmt(a.meanError, 3)} |`,
    ),
    '',
    '![loss against ratio](plots/loss-vs-ratio.svg)',
    '',
  ].join('\n');
}
