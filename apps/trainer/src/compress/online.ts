/**
 * Online expert clustering during training (`compress.clusterEvery`): the routing plans of every
 * micro-batch feed per-layer activation centroids; every `clusterEvery` steps the experts of each
 * MoE layer are clustered by the fused similarity of their current weights and those centroids, the
 * Jaccard stability against the previous clustering is computed, and the centroids start afresh.
 *
 * Shape letters: L MoE layers, E experts, G groups.
 */
import {
  ActivationCentroids,
  clusterModel,
  type ExpertGrouping,
  groupingJaccard,
} from '@switchyard/compress';
import type { MoETransformerLM } from '@switchyard/model';
import type { RoutingPlan } from '@switchyard/routing';
import { SwitchyardError } from '@switchyard/tensor';
import type { TrainConfig } from '../config/schema';
import type { ClusteringRecord } from '../report/records';

/**
 * Periodic clustering of a training model's experts and its stability.
 *
 * When to use: by the training run when `compress.clusterEvery` > 0; it adds a `clustering` entry
 * to the metrics.jsonl record of every clustering step.
 *
 * @example
 * ```ts
 * const online = new OnlineClustering(config, 4, 8);
 * online.observe(plans); // every micro-batch
 * const rec = online.afterStep(step, model); // a ClusteringRecord every clusterEvery steps
 * ```
 */
export class OnlineClustering {
  private readonly every: number;
  private readonly centroids: ActivationCentroids[];
  private previous: ExpertGrouping[] | undefined;

  constructor(
    private readonly config: TrainConfig['compress'],
    numMoELayers: number,
    numExperts: number,
  ) {
    this.every = config.clusterEvery;
    const G = config.groups;
    if (this.every > 0 && (G > numExperts || (config.equalSize && numExperts % G !== 0))) {
      throw new SwitchyardError(
        'CONFIG_INVALID',
        `compress.groups: expected ${config.equalSize ? `a divisor of the ${numExperts} experts (compress.equalSize is on)` : `<= the ${numExperts} experts`}, got ${G}`,
      );
    }
    this.centroids = Array.from({ length: numMoELayers }, () => new ActivationCentroids(numExperts));
  }

  /** Adds one micro-batch's routing plans (one per MoE layer) to the centroids. */
  observe(plans: readonly RoutingPlan[]): void {
    if (this.config.lambda >= 1) return; // structural similarity alone needs no centroids
    for (const [l, p] of plans.entries()) this.centroids[l]!.add(p);
  }

  /** After optimizer step `step` (1-based): the clustering record when `step` is a clustering step. */
  afterStep(step: number, model: MoETransformerLM): ClusteringRecord | undefined {
    if (this.every <= 0 || step % this.every !== 0 || this.centroids.length === 0) return undefined;
    const layers = clusterModel(model, {
      numGroups: this.config.groups,
      lambda: this.config.lambda,
      equalSize: this.config.equalSize,
      ...(this.config.lambda < 1 ? { centroids: this.centroids.map((c) => c.centroids()) } : {}),
    });
    for (const c of this.centroids) c.reset();
    const groupings = layers.map((l) => l.grouping);
    const perLayer = this.previous ? groupings.map((g, l) => groupingJaccard(this.previous![l]!, g)) : [];
    this.previous = groupings;
    return {
      jaccard: perLayer.length > 0 ? perLayer.reduce((a, b) => a + b, 0) / perLayer.length : null,
      jaccardPerLayer: perLayer,
      groupOf: groupings.map((g) => [...g.groupOf]),
    };
  }
}
