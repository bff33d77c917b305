/**
 * Compression of a whole model, through its seams: per MoE layer (`model.moeLayers()`) the experts
 * are clustered by fused similarity, factorised into shared bases and low-rank residuals, and the
 * layer's bank is swapped for a {@link CompressedExperts} with `MoELayer.setExperts`. Two-level
 * routing (group, then expert inside it) is the router's group-limited selection over groups made
 * contiguous by renumbering the experts.
 *
 * Shape letters: B sequences, S positions, E experts, D model width, F expert hidden width, G groups.
 */
import { type ExpertBank, expertWeightsOf, type MoELayer } from '@switchyard/experts';
import { type ModelConfig, MoETransformerLM } from '@switchyard/model';
import { disposeRoutingPlan } from '@switchyard/routing';
import { checkInt, checkNumber, invalidArgument, Rng, SwitchyardError, tf } from '@switchyard/tensor';
import { CompressedExperts, type CompressedExpertsOptions } from './bank';
import { clusterExperts, type ExpertGrouping, groupingFromAssignment } from './cluster';
import { checkRank, type ExpertError, type FactorInit, factorizeExperts } from './factorize';
import { compressionRatio } from './ratio';
import {
  ActivationCentroids,
  DEFAULT_LAMBDA,
  functionalSimilarity,
  fusedSimilarity,
  type SimilarityMatrix,
  structuralSimilarity,
} from './similarity';

/** Options of {@link compressModel}. */
export interface CompressModelOptions {
  /** G: groups per MoE layer, in [1, E]. */
  readonly numGroups: number;
  /** r: rank of every expert's residual, in [1, min(D, F)]. */
  readonly rank: number;
  /** Weight of structural similarity in the fused similarity. Default {@link DEFAULT_LAMBDA}. */
  readonly lambda?: number;
  /** Equal-size groups (G must divide E). Default false. */
  readonly equalSize?: boolean;
  /** Activation centroids per MoE layer (E rows of E values; see {@link activationCentroids}); needed when lambda < 1. */
  readonly centroids?: readonly (readonly (readonly number[])[])[];
  /** Groupings to use instead of clustering, one per MoE layer. */
  readonly groupings?: readonly ExpertGrouping[];
  /** `svd` from the trained experts (default), or `scratch`: random bases and factors to learn. */
  readonly init?: FactorInit;
  /** Seed of the scratch init. Default 0. */
  readonly seed?: number;
  /** Options of every new bank (materialisation, offload). */
  readonly bank?: CompressedExpertsOptions;
}

/** What compression did to one MoE layer. */
export interface LayerCompression {
  /** Block index of the layer. */
  readonly layer: number;
  readonly grouping: ExpertGrouping;
  /** Relative reconstruction error of each expert. */
  readonly errors: readonly ExpertError[];
  /** The similarities the grouping came from (absent when groupings were given). */
  readonly similarity?: LayerClustering['similarity'];
}

/** What {@link compressModel} returns. */
export interface CompressModelResult {
  readonly layers: readonly LayerCompression[];
  /** Model parameters before and after. */
  readonly paramsBefore: number;
  readonly paramsAfter: number;
  /** Routed-expert parameters (all MoE layers) before and after. */
  readonly expertParamsBefore: number;
  readonly expertParamsAfter: number;
  /** expertParamsBefore / expertParamsAfter, from the actual tensors. */
  readonly measuredRatio: number;
  /** {@link compressionRatio} when every group of every layer has the same size K, else null. */
  readonly formulaRatio: number | null;
}

const FN = 'compressModel';

/** The MoE layers of a model, or an error naming the constraint when it has none. */
function moeLayersOf(fn: string, model: MoETransformerLM): MoELayer[] {
  if (!(model instanceof MoETransformerLM)) throw invalidArgument(fn, 'model', 'a MoETransformerLM', model);
  const layers = model.moeLayers();
  if (layers.length === 0)
    throw new SwitchyardError(
      'INVALID_ARGUMENT',
      `\`model\` passed to ${fn}() has no MoE layers (config.moe selects none of its ${model.config.numLayers} blocks): there are no experts to compress`,
    );
  return layers;
}

/**
 * Activation centroids of every MoE layer's experts over some token batches (inference routing):
 * per layer, E rows of E values, the mean router-logit vector of the tokens routed to each expert.
 *
 * When to use: before {@link compressModel} with lambda < 1; feed it held-out or training batches.
 *
 * @example
 * ```ts
 * const centroids = activationCentroids(model, [tf.tensor2d(ids, [8, 128], 'int32')]);
 * ```
 */
export function activationCentroids(model: MoETransformerLM, batches: Iterable<tf.Tensor2D>): number[][][] {
  const fn = 'activationCentroids';
  const layers = moeLayersOf(fn, model);
  const accs = layers.map((l) => new ActivationCentroids(l.experts.numExperts));
  for (const tokensBS of batches) {
    const { logitsBSV, plans } = model.forward(tokensBS, { training: false });
    try {
      plans.forEach((p, i) => {
        accs[i]!.add(p);
      });
    } finally {
      logitsBSV.dispose();
      for (const p of plans) disposeRoutingPlan(p);
    }
  }
  return accs.map((a) => a.centroids());
}

/** Stacked weights of a bank that stores full experts, or an error naming what it is. */
function weightsOf(fn: string, bank: ExpertBank, layer: number) {
  if (bank instanceof CompressedExperts)
    throw invalidArgument(
      fn,
      `model (MoE layer in block ${layer})`,
      'a model whose experts are not yet compressed',
      'CompressedExperts',
    );
  try {
    return expertWeightsOf(bank.variables);
  } catch (e) {
    throw new SwitchyardError(
      'INVALID_ARGUMENT',
      `\`model\` passed to ${fn}(): the bank of the MoE layer in block ${layer} holds no stacked weights w1/w2 of all its experts`,
      { cause: e },
    );
  }
}

/** Options of {@link clusterModel}. */
export interface ClusterModelOptions {
  /** G: groups per MoE layer, in [1, E]. */
  readonly numGroups: number;
  /** Weight of structural similarity in the fused similarity. Default {@link DEFAULT_LAMBDA}. */
  readonly lambda?: number;
  /** Equal-size groups (G must divide E). Default false. */
  readonly equalSize?: boolean;
  /** Activation centroids per MoE layer (see {@link activationCentroids}); needed when lambda < 1. */
  readonly centroids?: readonly (readonly (readonly number[])[])[];
}

/** One MoE layer's grouping and the similarities it came from. */
export interface LayerClustering {
  /** Block index of the layer. */
  readonly layer: number;
  readonly grouping: ExpertGrouping;
  readonly similarity: {
    readonly structural: SimilarityMatrix;
    readonly functional?: SimilarityMatrix;
    readonly fused: SimilarityMatrix;
  };
}

/**
 * Clusters the experts of every MoE layer of `model` (whose banks hold full experts) into G groups
 * by the fused similarity `lambda * structural + (1 - lambda) * functional`. The model is not changed.
 *
 * When to use: to see or fix the groups before compressing (e.g. for {@link routeByGroup}), or
 * periodically during training to follow their stability.
 *
 * @example
 * ```ts
 * const layers = clusterModel(model, { numGroups: 2, lambda: 1, equalSize: true });
 * ```
 */
export function clusterModel(model: MoETransformerLM, options: ClusterModelOptions): LayerClustering[] {
  return clusterWith('clusterModel', model, options);
}

/** {@link clusterModel}, with errors naming `fn`. */
function clusterWith(fn: string, model: MoETransformerLM, options: ClusterModelOptions): LayerClustering[] {
  const layers = moeLayersOf(fn, model);
  if (options === null || typeof options !== 'object')
    throw invalidArgument(fn, 'options', 'a ClusterModelOptions object ({ numGroups })', options);
  const lambda = checkNumber(fn, 'options.lambda', options.lambda ?? DEFAULT_LAMBDA, { min: 0, max: 1 });
  const E = layers[0]!.experts.numExperts;
  if (!Number.isInteger(options.numGroups) || options.numGroups < 1 || options.numGroups > E)
    throw invalidArgument(
      fn,
      'options.numGroups',
      `an integer in [1, E] = [1, ${E}]: G > E leaves a group without experts`,
      options.numGroups,
    );
  if (lambda < 1 && options.centroids?.length !== layers.length)
    throw invalidArgument(
      fn,
      'options.centroids',
      `activation centroids for each of the ${layers.length} MoE layers (functional similarity, lambda = ${lambda} < 1)`,
      options.centroids?.length,
    );
  return layers.map((layer, i) => {
    const blockIndex = model.moeLayerIndices[i]!;
    const structural = structuralSimilarity(weightsOf(fn, layer.experts, blockIndex));
    const functional = lambda < 1 ? functionalSimilarity(options.centroids![i]!) : undefined;
    const fused = functional ? fusedSimilarity(structural, functional, lambda) : structural;
    const grouping = clusterExperts(fused, {
      numGroups: options.numGroups,
      ...(options.equalSize !== undefined ? { equalSize: options.equalSize } : {}),
    });
    return {
      layer: blockIndex,
      grouping,
      similarity: { structural, ...(functional ? { functional } : {}), fused },
    };
  });
}

/**
 * Compresses every MoE layer of `model` in place: clusters its experts (fused similarity, or the
 * given groupings), factorises them (SVD of each expert's residual from its group's mean, or a
 * scratch init) and installs a {@link CompressedExperts} bank through `MoELayer.setExperts`,
 * releasing the old bank. Reports the groupings, each expert's reconstruction error, and the
 * parameter counts and compression ratio.
 *
 * When to use: after training, before evaluating, fine-tuning or serving a smaller model.
 *
 * @example
 * ```ts
 * const centroids = activationCentroids(model, calibration);
 * const r = compressModel(model, { numGroups: 2, rank: 16, lambda: 0.5, centroids, equalSize: true });
 * console.log(r.measuredRatio, r.layers[0].errors);
 * ```
 */
export function compressModel(model: MoETransformerLM, options: CompressModelOptions): CompressModelResult {
  const layers = moeLayersOf(FN, model);
  if (options === null || typeof options !== 'object')
    throw invalidArgument(FN, 'options', 'a CompressModelOptions object ({ numGroups, rank })', options);
  const first = layers[0]!.experts;
  checkRank(FN, options.rank, first.dModel, first.dFF);
  if (options.groupings !== undefined && options.groupings.length !== layers.length)
    throw invalidArgument(
      FN,
      'options.groupings',
      `one grouping per MoE layer (${layers.length})`,
      options.groupings.length,
    );
  const clustered =
    options.groupings === undefined
      ? clusterWith(FN, model, {
          numGroups: options.numGroups,
          ...(options.lambda !== undefined ? { lambda: options.lambda } : {}),
          ...(options.equalSize !== undefined ? { equalSize: options.equalSize } : {}),
          ...(options.centroids !== undefined ? { centroids: options.centroids } : {}),
        }).map((c) => ({ grouping: c.grouping, similarity: c.similarity }))
      : options.groupings.map((g, i) => {
          const grouping = groupingFromAssignment(g.groupOf);
          if (grouping.numExperts !== layers[i]!.experts.numExperts)
            throw invalidArgument(
              FN,
              `options.groupings[${i}]`,
              `a grouping of ${layers[i]!.experts.numExperts} experts`,
              grouping.numExperts,
            );
          return { grouping, similarity: undefined };
        });
  const paramsBefore = model.numParams();
  const rng = new Rng(options.seed ?? 0);
  let expertParamsBefore = 0;
  let expertParamsAfter = 0;
  const results: LayerCompression[] = [];
  // Every layer is factorised before any bank is swapped, so a failure leaves the model unchanged.
  const built: { layer: MoELayer; bank: CompressedExperts }[] = [];
  try {
    layers.forEach((layer, i) => {
      const blockIndex = model.moeLayerIndices[i]!;
      const old = layer.experts;
      const weights = weightsOf(FN, old, blockIndex);
      const { grouping, similarity } = clustered[i]!;
      const { factors, errors } = factorizeExperts(weights, old.activation, {
        rank: options.rank,
        grouping,
        init: options.init ?? 'svd',
        rng: rng.fork(i),
      });
      built.push({ layer, bank: new CompressedExperts(factors, options.bank ?? {}) });
      results.push({ layer: blockIndex, grouping, errors, ...(similarity ? { similarity } : {}) });
    });
  } catch (e) {
    for (const b of built) b.bank.dispose();
    throw e;
  }
  for (const { layer, bank } of built) {
    expertParamsBefore += layer.experts.numParams();
    expertParamsAfter += bank.numParams();
    layer.setExperts(bank).dispose();
  }
  const sizes = new Set(results.flatMap((r) => r.grouping.groups.map((g) => g.length)));
  const formulaRatio =
    sizes.size === 1
      ? compressionRatio({
          groupSize: [...sizes][0]!,
          dIn: first.dModel,
          dOut: first.dFF,
          rank: options.rank,
        })
      : null;
  return {
    layers: results,
    paramsBefore,
    paramsAfter: model.numParams(),
    expertParamsBefore,
    expertParamsAfter,
    measuredRatio: expertParamsBefore / expertParamsAfter,
    formulaRatio,
  };
}

/** What {@link routeByGroup} returns. */
export interface GroupRouted {
  /** The new model: experts renumbered so groups are contiguous, router config group-limited. */
  readonly model: MoETransformerLM;
  /** Per MoE layer, the groupings in the new numbering (group g = experts g*M .. (g+1)*M - 1). */
  readonly groupings: readonly ExpertGrouping[];
  /** Per MoE layer, the original index of each new expert (`order[new] = old`). */
  readonly orders: readonly (readonly number[])[];
}

/**
 * Two-level routing (group first, then the experts inside the chosen groups) for a model whose
 * experts are grouped: builds a copy of `model` with each layer's experts renumbered so that every
 * group is a contiguous block, and the router configured with group-limited selection
 * (`groupLimited: { numGroups: G, groupTopK }`): per token the `groupTopK` groups with the best
 * scores (sum of their top-2 expert scores) are kept and the top-K experts are chosen inside them.
 * The renumbering moves router columns, expert weights and stored selection biases together, so
 * with `groupTopK = G` the copy computes exactly what the original does. Needs equal-size groups, the
 * same G in every layer, a router kind with group-limited selection (topk, switch, gshard, sigmoid)
 * and K <= groupTopK * E / G. The original model is left as it was.
 *
 * When to use: before {@link compressModel}, with the groupings it should use, to serve a
 * compressed model that touches only `groupTopK` groups per token (see offload).
 *
 * @example
 * ```ts
 * const routed = routeByGroup(model, groupings, 1);
 * compressModel(routed.model, { numGroups: 2, rank: 16, groupings: routed.groupings });
 * ```
 */
export function routeByGroup(
  model: MoETransformerLM,
  groupings: readonly ExpertGrouping[],
  groupTopK: number,
): GroupRouted {
  const fn = 'routeByGroup';
  const layers = moeLayersOf(fn, model);
  if (!Array.isArray(groupings) || groupings.length !== layers.length)
    throw invalidArgument(
      fn,
      'groupings',
      `one grouping per MoE layer (${layers.length})`,
      groupings?.length,
    );
  const E = model.config.moe.experts.numExperts;
  const G = groupings[0]!.numGroups;
  const M = E / G;
  groupings.forEach((g, i) => {
    if (g.numExperts !== E || g.numGroups !== G || g.groups.some((m: readonly number[]) => m.length !== M))
      throw invalidArgument(
        fn,
        `groupings[${i}]`,
        `equal-size groups of the ${E} experts, ${G} groups of ${M} like groupings[0] (two-level routing keeps groupTopK of G equal groups)`,
        g.groups.map((m: readonly number[]) => m.length).join('/'),
      );
  });
  checkInt(fn, 'groupTopK', groupTopK, { min: 1, max: G });
  const router = model.config.moe.router;
  if (!['topk', 'switch', 'gshard', 'sigmoid'].includes(router.type))
    throw invalidArgument(
      fn,
      'model',
      'a model whose router has group-limited selection (topk, switch, gshard, sigmoid)',
      router.type,
    );
  for (let i = 0; i < layers.length; i++) weightsOf(fn, layers[i]!.experts, model.moeLayerIndices[i]!);
  const config: ModelConfig = {
    ...model.config,
    moe: {
      ...model.config.moe,
      router: { ...router, groupLimited: { numGroups: G, groupTopK } } as typeof router,
    },
  };
  const orders: number[][] = groupings.map((g: ExpertGrouping) => g.groups.flat());
  const routed = new MoETransformerLM(config, new Rng(0));
  try {
    const layerOfBlock = new Map(model.moeLayerIndices.map((b, i) => [b, i]));
    const target = routed.namedVariables();
    for (const [name, v] of model.namedVariables()) {
      const t = target.get(name);
      if (!t) throw new SwitchyardError('STATE_INVALID', `${fn}(): the routed copy has no variable ${name}`);
      const m = /^layers\.(\d+)\.moe\.(router\.weight|experts\.w[123])$/.exec(name);
      const order = m ? orders[layerOfBlock.get(Number(m[1]))!] : undefined;
      tf.tidy(() => {
        if (!order) t.assign(v);
        else {
          const idx = tf.tensor1d(Int32Array.from(order), 'int32');
          t.assign(tf.gather(v, idx, m![2] === 'router.weight' ? 1 : 0));
        }
      });
    }
    orders.forEach((order, i) => {
      const bias = model.getSelectionBias(i);
      if (bias)
        routed.setSelectionBias(
          i,
          Float32Array.from(order, (old: number) => bias[old]!),
        );
    });
  } catch (e) {
    routed.dispose();
    throw e;
  }
  const contiguous = Array.from({ length: E }, (_, e) => Math.floor(e / M));
  return { model: routed, groupings: orders.map(() => groupingFromAssignment(contiguous)), orders };
}
