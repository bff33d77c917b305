/**
 * Expert parallelism in the trainer (`parallel.expertParallel` P > 1): the ranks form groups of P
 * consecutive ranks; inside a group every MoE layer's experts sit in physical slots spread over the
 * P ranks (a `ReplicatedExpertBank`), with `parallel.redundantExperts` extra slots holding copies of
 * the busiest experts as EPLB places them; the groups are data-parallel copies of each other, and
 * every other weight is replicated over all ranks. Every `parallel.rebalanceEvery` steps the
 * expert loads the step already counts feed EPLB, and the weights and AdamW moments move to the new
 * placement before the next step. Checkpoints always hold the full experts (and their moments) in
 * the single-device layout, so they load on one rank and resume under any layout.
 *
 * Shape letters: L MoE layers, E experts, Q slots per layer (E + redundant), P ranks per group,
 * M micro-batches per step.
 */

import type { MoETransformerLM } from '@switchyard/model';
import {
  applyReplicatedExperts,
  type Communicator,
  type ExpertParallelGroups,
  expertParallelGroups,
  type ReplicatedExpertBank,
  rebalanceReplicatedExperts,
  type SlotFollowers,
  withFullExperts,
} from '@switchyard/parallel';
import { balancedness } from '@switchyard/plan';
import { SwitchyardError, type Tensor, type tf } from '@switchyard/tensor';
import type { TrainConfig } from '../config/schema';
import type { ExpertGradients } from './optimizer-step';

/** What a checkpoint records of expert-parallel training, to continue it under the same layout. */
export interface ExpertPlacementState {
  /** P of the run that saved it. */
  readonly degree: number;
  /** [L][Q] slot-to-expert maps in force. */
  readonly physToLog: number[][];
  /** [L][E] tokens per expert counted since the last rebalance. */
  readonly window: number[][];
  /** Steps counted in `window`. */
  readonly windowSteps: number;
}

/** A rebalance as metrics.jsonl records it. */
export interface RebalanceRecord {
  /** Mean over layers of the balancedness of the window's loads under the placement that served them. */
  readonly before: number;
  /** The same under the placement in force after the rebalance (= before when nothing moved). */
  readonly after: number;
  /** False when EPLB's placement was not better on these loads and the experts stayed. */
  readonly migrated: boolean;
  /** Milliseconds moving weights and moments (0 when nothing moved). */
  readonly migrationMs: number;
}

/** What {@link ExpertParallelTraining.afterStep} measured. */
export interface ExpertStepStats {
  /** Mean over MoE layers of mean / max rank load (rows computed) of this step under the placement that served it. */
  readonly balancedness: number;
  /** When the step ended with a rebalance: mean balancedness of the window's loads before and after, whether experts moved, and the migration time. */
  readonly rebalance?: RebalanceRecord;
}

/** Moment variables of one model variable (AdamW's `m` and `v`). */
export type MomentsOf = (name: string) => { readonly m: tf.Variable; readonly v: tf.Variable } | undefined;

/**
 * Refuses a layout the ranks cannot hold (CONFIG_INVALID naming `parallel.*`): P must divide the
 * ranks, and the sharded optimizer (`train.optimizerOn: host`) cannot hold expert slots.
 *
 * @example
 * ```ts
 * checkExpertLayout(config, 4); // --ranks 4 with parallel.expertParallel 2: fine
 * ```
 */
export function checkExpertLayout(config: TrainConfig, ranks: number): void {
  const P = config.parallel.expertParallel;
  if (P === 1) return;
  if (config.parallel.pipeline > 1) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `parallel.expertParallel: expected 1 under a pipeline (parallel.pipeline = ${config.parallel.pipeline}); pipeline stages with expert parallelism inside them are not supported yet, got ${P}`,
    );
  }
  if (ranks % P !== 0) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `parallel.expertParallel: expected a divisor of the number of ranks (${ranks}), got ${P}` +
        (ranks < P ? `; start ${P} or more ranks with --ranks` : ''),
    );
  }
  if (config.train.optimizerOn === 'host') {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      'train.optimizerOn: expected auto or backend with parallel.expertParallel > 1 (the sharded host AdamW lays out replicated weights only), got host',
    );
  }
}

/**
 * The expert-parallel side of a run: the groups, one bank per MoE layer, gradient reduction over
 * expert copies for the optimizer step, the load window and its rebalancing, and the conversions
 * between the slot layout and the single-device layout of checkpoints.
 *
 * When to use: built by the run's setup when `parallel.expertParallel` > 1, before the optimizer
 * (whose variables are then the slots).
 *
 * @example
 * ```ts
 * const ep = ExpertParallelTraining.install(config, comm, model, undefined);
 * const optimizer = new OptimizerStep(comm, model.namedVariables(), cfg, 'backend', 1, {}, ep);
 * ```
 */
export class ExpertParallelTraining implements ExpertGradients {
  readonly groups: ExpertParallelGroups;
  readonly banks: readonly ReplicatedExpertBank[];
  /** Model variable names of each layer's bank variables, keyed by bank variable name. */
  private readonly names: readonly Readonly<Record<string, string>>[];
  private readonly owned = new Set<string>();
  /** [L][E] loads counted since the last rebalance. */
  private window: Float64Array[];
  private windowSteps: number;

  private constructor(
    private readonly config: TrainConfig,
    private readonly model: MoETransformerLM,
    comm: Communicator,
    saved: ExpertPlacementState | undefined,
  ) {
    const P = config.parallel.expertParallel;
    const layers = model.moeLayers();
    const E = layers[0]?.experts.numExperts ?? 0;
    const Q = E + config.parallel.redundantExperts;
    if (Q % P !== 0) {
      throw new SwitchyardError(
        'CONFIG_INVALID',
        `parallel.redundantExperts: expected numExperts (${E}) + redundantExperts to be a multiple of parallel.expertParallel (${P}), got ${config.parallel.redundantExperts}`,
      );
    }
    this.groups = expertParallelGroups(comm, P);
    const sameLayout =
      saved !== undefined &&
      saved.degree === P &&
      saved.physToLog.length === layers.length &&
      saved.physToLog.every((m) => m.length === Q);
    this.window = layers.map((_, l) => Float64Array.from(saved?.window[l] ?? new Array<number>(E).fill(0)));
    this.windowSteps = saved?.windowSteps ?? 0;
    this.banks = applyReplicatedExperts(
      model,
      this.groups,
      sameLayout ? { physToLog: saved.physToLog } : { slots: Q },
    );
    if (!sameLayout && this.windowSteps > 0 && config.parallel.rebalanceEvery > 0) {
      // A new layout: place from the loads the checkpoint counted, not from uniform ones.
      rebalanceReplicatedExperts(this.banks, this.windowLoads());
    }
    this.names = model.moeLayerIndices.map((block, l) =>
      Object.fromEntries(
        Object.keys(this.banks[l]!.variables).map((n) => [n, `layers.${block}.moe.experts.${n}`]),
      ),
    );
    for (const m of this.names) for (const name of Object.values(m)) this.owned.add(name);
  }

  /**
   * Installs expert parallelism on `model` as `config.parallel` says, or returns undefined when
   * `parallel.expertParallel` is 1. `saved` is a checkpoint's placement state (reused when the
   * layout is the same). A collective when it rebalances from saved loads.
   */
  static install(
    config: TrainConfig,
    comm: Communicator,
    model: MoETransformerLM,
    saved: ExpertPlacementState | undefined,
  ): ExpertParallelTraining | undefined {
    if (config.parallel.expertParallel === 1 || model.moeLayers().length === 0) return undefined;
    checkExpertLayout(config, comm.worldSize);
    return new ExpertParallelTraining(config, model, comm, saved);
  }

  /** True for the model variable names of expert slots. */
  owns(name: string): boolean {
    return this.owned.has(name);
  }

  /** Replaces, in `grads`, each bank's slot gradients by the sums every copy applies (see `ReplicatedExpertBank.reduceGradients`). A collective. */
  reduce(grads: Map<string, tf.Tensor>): void {
    this.banks.forEach((bank, l) => {
      const names = this.names[l]!;
      const mine: Record<string, Tensor | undefined> = {};
      for (const [n, name] of Object.entries(names)) mine[n] = grads.get(name);
      const reduced = bank.reduceGradients(mine);
      for (const [n, name] of Object.entries(names)) {
        grads.get(name)?.dispose();
        grads.set(name, reduced[n]!);
      }
    });
  }

  /** This rank's share of the squared norm of the slot gradients (see `ReplicatedExpertBank.squaredNormShare`). */
  squaredNormShare(grads: ReadonlyMap<string, tf.Tensor>): number {
    let total = 0;
    this.banks.forEach((bank, l) => {
      const mine: Record<string, Tensor | undefined> = {};
      for (const [n, name] of Object.entries(this.names[l]!)) mine[n] = grads.get(name);
      total += bank.squaredNormShare(mine);
    });
    return total;
  }

  /**
   * The end of a step, after the optimizer update: adds the step's loads (per micro-batch counts
   * summed over ranks, [M][L][E] flattened) to the window, measures the step's balancedness and,
   * every `parallel.rebalanceEvery` steps, re-places the experts from the window and moves the
   * weights and the moments `momentsOf` gives (a collective).
   */
  afterStep(step: number, countsMLE: Float64Array, M: number, momentsOf: MomentsOf): ExpertStepStats {
    const L = this.banks.length;
    const E = this.window[0]!.length;
    const stepLE = Array.from({ length: L }, () => new Array<number>(E).fill(0));
    for (let m = 0; m < M; m++)
      for (let l = 0; l < L; l++)
        for (let e = 0; e < E; e++) stepLE[l]![e]! += countsMLE[(m * L + l) * E + e]!;
    stepLE.forEach((row, l) => {
      for (let e = 0; e < E; e++) this.window[l]![e]! += row[e]!;
    });
    this.windowSteps += 1;
    const stepBalance = mean(balancedness(stepLE, this.placement()).balancedness);
    const every = this.config.parallel.rebalanceEvery;
    if (every === 0 || (step + 1) % every !== 0) return { balancedness: stepBalance };
    const followers = (l: number): SlotFollowers[] => {
      const sets: Record<string, tf.Variable>[] = [{}, {}];
      for (const [n, name] of Object.entries(this.names[l]!)) {
        const mv = momentsOf(name);
        if (mv === undefined) continue;
        sets[0]![n] = mv.m;
        sets[1]![n] = mv.v;
      }
      return sets.filter((s) => Object.keys(s).length > 0);
    };
    const r = rebalanceReplicatedExperts(this.banks, this.windowLoads(), followers);
    this.window = this.window.map((w) => new Float64Array(w.length));
    this.windowSteps = 0;
    return {
      balancedness: stepBalance,
      rebalance: {
        before: mean(r.before),
        after: mean(r.after),
        migrated: r.migrated,
        migrationMs: r.migrationMs,
      },
    };
  }

  /** The placement state a checkpoint records. */
  state(): ExpertPlacementState {
    return {
      degree: this.groups.degree,
      physToLog: this.banks.map((b) => b.physToLog),
      window: this.window.map((w) => Array.from(w)),
      windowSteps: this.windowSteps,
    };
  }

  /**
   * Optimizer state in the single-device layout: the slot moments (`m/<slot variable>`,
   * `v/<slot variable>`) replaced by per-expert tensors [E, ...] from each expert's first copy; the
   * others passed through. Release the result with {@link ExpertParallelTraining.releaseConverted}. A collective.
   */
  fullMoments(state: Record<string, tf.Tensor>): Record<string, tf.Tensor> {
    const out: Record<string, tf.Tensor> = { ...state };
    this.forEachSlotMoment(state, (key, t, bank) => {
      out[key] = bank.gatherLogical(t.dataSync() as Float32Array, t.shape);
    });
    return out;
  }

  /** Releases the tensors {@link ExpertParallelTraining.fullMoments} or {@link ExpertParallelTraining.slotMoments} made from `original`. */
  releaseConverted(
    converted: Readonly<Record<string, tf.Tensor>>,
    original: Readonly<Record<string, tf.Tensor>>,
  ): void {
    for (const [key, t] of Object.entries(converted)) if (original[key] !== t) t.dispose();
  }

  /**
   * Saved optimizer state (single-device layout, as checkpoints hold it) in the slot layout of this
   * rank: per-expert moments become this rank's slots. Release the result's new tensors with
   * {@link ExpertParallelTraining.releaseConverted}.
   */
  slotMoments(saved: Readonly<Record<string, tf.Tensor>>): Record<string, tf.Tensor> {
    const out: Record<string, tf.Tensor> = { ...saved };
    this.forEachSlotMoment(saved, (key, t, bank) => {
      out[key] = bank.slotsOf(t);
    });
    return out;
  }

  /** Runs `fn` while every MoE layer holds its full experts (gathered from the slots). A collective. */
  withFullExperts<R>(fn: () => R | Promise<R>): Promise<R> {
    return withFullExperts(this.model, fn);
  }

  /** The opening line describing the layout. */
  describe(): string {
    const { degree: P } = this.groups;
    const R = this.groups.ep.worldSize * this.groups.replicas.worldSize;
    const bank = this.banks[0]!;
    const N = bank.numSlots - bank.numExperts;
    const every = this.config.parallel.rebalanceEvery;
    return (
      `expert parallel: ${R / P} group(s) of ${P} ranks (ranks ${Array.from({ length: R / P }, (_, g) => `${g * P}-${g * P + P - 1}`).join(', ')}), ` +
      `${bank.numSlots} expert slots per layer (${bank.slotsPerRank} per rank${N > 0 ? `, ${N} redundant` : ''}); ` +
      (every > 0 ? `EPLB rebalances every ${every} steps` : 'placement fixed')
    );
  }

  /** The placement in force, as `balancedness` of @switchyard/plan takes it. */
  private placement() {
    return {
      physToLog: this.banks.map((b) => b.physToLog),
      replicaCounts: this.banks.map((b) => b.replicaCounts),
      gpus: this.groups.degree,
    };
  }

  private windowLoads(): number[][] {
    return this.window.map((w) => Array.from(w));
  }

  /** Calls `fn` for each moment tensor (`m/<name>`, `v/<name>`) of a slot variable in `state`. */
  private forEachSlotMoment(
    state: Readonly<Record<string, tf.Tensor>>,
    fn: (key: string, t: tf.Tensor, bank: ReplicatedExpertBank) => void,
  ): void {
    this.banks.forEach((bank, l) => {
      for (const name of Object.values(this.names[l]!)) {
        for (const kind of ['m', 'v']) {
          const key = `${kind}/${name}`;
          const t = state[key];
          if (t !== undefined) fn(key, t, bank);
        }
      }
    });
  }
}

function mean(xs: readonly number[]): number {
  return xs.length > 0 ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN;
}
