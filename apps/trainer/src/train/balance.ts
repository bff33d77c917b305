/**
 * The balancing method of a run, applied to every MoE layer: the auxiliary loss terms added to each
 * micro-batch's objective, the loss-free bias controller, and their checkpointable state.
 *
 * Shape letters: L MoE layers, E routed experts.
 */
import {
  GlobalAuxLoss,
  LossFreeBalancer,
  type LossFreeBalancerState,
  microBatchAuxLoss,
  routerZLoss,
  ShuffledBatchAuxLoss,
  sequenceAuxLoss,
} from '@switchyard/balance';
import type { RoutingPlan } from '@switchyard/routing';
import { Rng, type RngState, tf } from '@switchyard/tensor';
import type { BalanceMethod } from '../config/schema';

/** Settings of {@link BalanceController}. */
export interface BalanceSettings {
  readonly method: BalanceMethod;
  readonly alpha: number;
  /** global+local: the micro-batch term's coefficient is `localRatio * alpha`. */
  readonly localRatio: number;
  /** loss-free: bias update rate u. */
  readonly biasUpdateRate: number;
  /**
   * global, global+local: `cumulative` pools the counts of the micro-batches seen so far in the step;
   * `step` expects {@link BalanceController.observeStep} with every micro-batch of the step first.
   */
  readonly globalPool?: 'cumulative' | 'step';
  /** Router z-loss coefficient (0: off). */
  readonly zLoss: number;
  readonly numLayers: number;
  readonly numExperts: number;
  /** Tokens per sequence (for the sequence-wise loss). */
  readonly seqLen: number;
  /** Seed of the shuffled-batch sampling. */
  readonly seed: number;
  /** Sums expert counts over data-parallel ranks (global and loss-free methods); the identity when omitted. */
  readonly allReduce?: (valuesE: Float32Array) => Float32Array;
  /** Concatenates every rank's expert indices in rank order (shuffled method); the identity when omitted. */
  readonly allGather?: (values: Int32Array) => Int32Array;
  /**
   * Sums the step's expert counts for the loss-free bias update, when they must be pooled over more
   * ranks than `allReduce` pools (the two copies of a DualPipe stage); `allReduce` when omitted.
   */
  readonly stepAllReduce?: (valuesE: Float32Array) => Float32Array;
}

/** Checkpointable state of a {@link BalanceController}. */
export interface BalanceControllerState {
  readonly method: BalanceMethod;
  readonly lossFree?: LossFreeBalancerState;
  readonly shuffledRng?: RngState;
}

/**
 * Applies a run's balancing method to all MoE layers.
 *
 * When to use: the trainer calls `observe` and `loss` once per micro-batch (inside the gradient
 * tape), and `afterStep` once per optimizer step.
 *
 * @example
 * ```ts
 * const bal = new BalanceController({ method: 'global', alpha: 1e-2, ... });
 * bal.observe(plans, m);
 * const aux = bal.loss(plans, m); // a scalar or null
 * // ... optimizer step ...
 * bal.afterStep();
 * ```
 */
export class BalanceController {
  readonly settings: BalanceSettings;
  private readonly global: GlobalAuxLoss[] = [];
  private readonly shuffled: ShuffledBatchAuxLoss[] = [];
  private shuffledRng: Rng | undefined;
  private readonly lossFree: LossFreeBalancer | undefined;

  constructor(settings: BalanceSettings) {
    this.settings = settings;
    const { method, alpha, numLayers: L, numExperts: E } = settings;
    if (L === 0) {
      this.lossFree = undefined;
      return;
    }
    if (method === 'global' || method === 'global+local') {
      const localCoef = method === 'global+local' ? settings.localRatio * alpha : 0;
      const reduce = settings.allReduce ? { allReduce: settings.allReduce } : {};
      for (let l = 0; l < L; l++) {
        this.global.push(new GlobalAuxLoss({ numExperts: E, alpha, localCoef, ...reduce }));
      }
    }
    if (method === 'shuffled') this.makeShuffled(new Rng(settings.seed).fork('shuffled-batch'));
    this.lossFree =
      method === 'loss-free'
        ? new LossFreeBalancer({
            numLayers: L,
            numExperts: E,
            updateRate: settings.biasUpdateRate,
            ...((settings.stepAllReduce ?? settings.allReduce)
              ? { allReduce: (settings.stepAllReduce ?? settings.allReduce)! }
              : {}),
          })
        : undefined;
  }

  private makeShuffled(rng: Rng): void {
    this.shuffledRng = rng;
    this.shuffled.length = 0;
    for (let l = 0; l < this.settings.numLayers; l++) {
      this.shuffled.push(
        new ShuffledBatchAuxLoss({
          numExperts: this.settings.numExperts,
          alpha: this.settings.alpha,
          rng,
          ...(this.settings.allGather ? { allGather: this.settings.allGather } : {}),
        }),
      );
    }
  }

  /** Whether the global loss takes f from the whole step (`globalPool: 'step'`). */
  get pooledPerStep(): boolean {
    return this.settings.globalPool === 'step' && this.global.length > 0;
  }

  /**
   * `globalPool: 'step'`: pools the counts of every micro-batch of the coming step (`countsMLE[m][l]`,
   * each the expert counts of micro-batch m in MoE layer `firstLayer + l`), so that every micro-batch's
   * global loss uses f of the whole step. Call once per step, before the first `loss`.
   */
  observeStep(countsMLE: readonly (readonly ArrayLike<number>[])[], firstLayer = 0): void {
    countsMLE.forEach((countsLE, m) => {
      countsLE.forEach((countsE, i) => {
        this.global[firstLayer + i]?.accumulate(countsE, m);
      });
    });
  }

  /** The selection bias of MoE layer `layer` (loss-free only). */
  selectionBias(layer: number): Float32Array | undefined {
    return this.lossFree?.bias(layer);
  }

  /**
   * Stores the loss-free biases in the model (`setSelectionBias` per MoE layer), so that evaluation
   * and a saved checkpoint route as training does; nothing for the other methods.
   */
  copyBiasesTo(model: { setSelectionBias(layer: number, biasE: Float32Array): void }): void {
    for (let l = 0; l < this.settings.numLayers; l++) {
      const b = this.selectionBias(l);
      if (b) model.setSelectionBias(l, b);
    }
  }

  /**
   * Records one micro-batch's routing (counts for global/shuffled pools and the loss-free controller).
   * `plans[i]` is MoE layer `firstLayer + i` (a pipeline stage passes its own layers' plans).
   */
  observe(plans: readonly RoutingPlan[], micro: number, firstLayer = 0): void {
    const pooled = this.pooledPerStep;
    plans.forEach((p, i) => {
      const l = firstLayer + i;
      if (!pooled) this.global[l]?.accumulate(p.countsE, micro);
      this.shuffled[l]?.accumulate(p, micro);
      this.lossFree?.observe(l, p.countsE, micro);
    });
  }

  /**
   * Sum over layers of the method's loss and the z-loss for one micro-batch; null when there is none.
   * The terms belong to the caller's scope (a tf.tidy or gradient function) and are released with it.
   */
  loss(plans: readonly RoutingPlan[], micro: number, firstLayer = 0): tf.Scalar | null {
    const { method, alpha, zLoss, seqLen } = this.settings;
    const terms: tf.Scalar[] = [];
    plans.forEach((p, i) => {
      const l = firstLayer + i;
      if (alpha > 0) {
        if (method === 'micro') terms.push(microBatchAuxLoss(p, { alpha }));
        else if (method === 'sequence') terms.push(sequenceAuxLoss(p, seqLen, { alpha }));
        else if (method === 'global' || method === 'global+local') {
          // Full-step pool: f from every micro-batch of the step (the latest pool); else as of micro-batch m.
          terms.push(this.global[l]!.loss(p, this.pooledPerStep ? undefined : micro));
        } else if (method === 'shuffled') terms.push(this.shuffled[l]!.loss(p, micro));
      }
      if (zLoss > 0) terms.push(routerZLoss(p, { coef: zLoss }));
    });
    if (terms.length === 0) return null;
    return terms.length === 1 ? terms[0]! : (tf.addN(terms) as tf.Scalar);
  }

  /** Ends the optimizer step: loss-free bias update, pools emptied. */
  afterStep(): void {
    for (const g of this.global) g.resetAfterStep();
    for (const s of this.shuffled) s.resetAfterStep();
    // The all-reduce is synchronous (the identity in one process, a blocking collective across ranks).
    this.lossFree?.step();
  }

  /** The biases of every layer (loss-free), for reports. */
  biases(): number[][] | undefined {
    return this.lossFree?.state().biases.map((b) => [...b]);
  }

  state(): BalanceControllerState {
    return {
      method: this.settings.method,
      ...(this.lossFree ? { lossFree: this.lossFree.state() } : {}),
      ...(this.shuffledRng ? { shuffledRng: this.shuffledRng.getState() } : {}),
    };
  }

  loadState(state: BalanceControllerState): void {
    if (state.lossFree && this.lossFree) this.lossFree.loadState(state.lossFree);
    if (state.shuffledRng && this.shuffled.length > 0) this.makeShuffled(Rng.fromState(state.shuffledRng));
  }
}
