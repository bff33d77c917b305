/**
 * The expert bank: how an {@link MoELayer} holds its routed experts. The layer routes and builds the
 * dispatch; the bank turns the dispatched tokens into the routed output. Local grouped experts
 * ({@link RoutedExperts}) are one bank; expert-parallel experts (all-to-all around grouped compute,
 * in @switchyard/parallel) and compressed experts are others. Strategies swap a layer's bank with
 * {@link MoELayer.setExperts}; nothing else about the layer changes.
 *
 * Shape letters: T tokens, D model width, E experts, K slots per token.
 */
import type { RoutingPlan } from '@switchyard/routing';
import { SwitchyardError, type Tensor2D, type tf } from '@switchyard/tensor';
import { type ComputeMode, type ExpertActivation, matricesOf } from './config';
import type { DispatchPlan } from './dispatch';
import { checkTokens } from './ffn';
import type { ResolvedComputeMode } from './grouped';

/** What {@link ExpertBank.forwardWithDispatch} returns. */
export interface BankOutput {
  /** Routed output [T, D]: `sum over kept slots k of topkWeightTK[t, k] * expert_{topkIdxTK[t, k]}(x_t)`. */
  readonly yTD: Tensor2D;
  /** Which grouped-compute path ran. */
  readonly computeMode: ResolvedComputeMode;
}

/**
 * The routed experts of one MoE layer, as the layer uses them: named variables, a forward over a
 * routing plan and its dispatch, parameter and FLOP counts, and dispose. Counts describe the
 * layer's E logical experts whatever part of them this bank holds.
 *
 * When to use: implement it to change where or how experts compute (on other ranks, with replicas,
 * compressed) and install it with {@link MoELayer.setExperts}.
 *
 * @example
 * ```ts
 * const bank: ExpertBank = layer.experts;
 * const d = buildDispatch(plan);
 * const { yTD } = bank.forwardWithDispatch(xTD, plan, d, 'auto');
 * ```
 */
export interface ExpertBank {
  /** E: the logical experts the layer's router routes to. */
  readonly numExperts: number;
  /** D: model width of the rows in and out. */
  readonly dModel: number;
  /** F: hidden width of one expert. */
  readonly dFF: number;
  readonly activation: ExpertActivation;
  /**
   * Trainable variables this bank holds in this process, by name (the stacked-weight banks use
   * `w1`, `w3`, `w2`); a layer exposes them as `experts.<name>`.
   */
  readonly variables: Readonly<Record<string, tf.Variable>>;
  /**
   * The routed output of a batch: every kept (token, slot) assignment of `plan` through its expert,
   * weighted by its combine weight and summed per token; dropped assignments add nothing.
   * Differentiable in `xTD`, `plan.topkWeightTK` and the bank's variables.
   */
  forwardWithDispatch(
    xTD: Tensor2D,
    plan: RoutingPlan,
    dispatch: DispatchPlan,
    computeMode: ComputeMode,
  ): BankOutput;
  /** Weights of one expert. */
  paramsPerExpert(): number;
  /** Weights of all E experts. */
  numParams(): number;
  /** Matrix-multiply FLOPs (2 per multiply-add) of one (token, expert) assignment's forward pass. */
  flopsPerAssignment(): number;
  /** Releases the bank's variables. */
  dispose(): void;
}

/**
 * The checks every bank makes before a forward: `xTD` is [T, D] float32 with the bank's D, and the
 * plan and its dispatch cover the same T tokens and route to the bank's E experts.
 *
 * When to use: first thing in an {@link ExpertBank.forwardWithDispatch} implementation.
 *
 * @example
 * ```ts
 * checkBankInput('MyBank.forward', this, xTD, plan, d);
 * ```
 */
export function checkBankInput(
  fn: string,
  bank: Pick<ExpertBank, 'numExperts' | 'dModel'>,
  xTD: Tensor2D,
  plan: RoutingPlan,
  d: DispatchPlan,
): void {
  checkTokens(fn, xTD, bank.dModel);
  if (plan.numExperts !== bank.numExperts || d.numExperts !== bank.numExperts) {
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`plan\` passed to ${fn}() must route to numExperts (${bank.numExperts}) experts, got ${plan.numExperts}`,
    );
  }
  if (plan.numTokens !== xTD.shape[0] || d.numTokens !== xTD.shape[0]) {
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`plan\` passed to ${fn}() must cover the ${xTD.shape[0]} tokens of xTD, got ${plan.numTokens}`,
    );
  }
}

/** E, D, F and the activation of a bank. */
export interface BankShape {
  readonly numExperts: number;
  readonly dModel: number;
  readonly dFF: number;
  readonly activation: ExpertActivation;
}

/**
 * The part every bank of stacked expert weights shares: its shape, its variables (`w1`, `w3` for
 * SwiGLU, `w2`, each with a leading axis over the experts it holds), the parameter and FLOP counts
 * of the E logical experts, and dispose. Subclasses write the forward.
 *
 * When to use: as the base of a bank that keeps stacked weights, all E experts
 * ({@link RoutedExperts}) or a share of them (one rank's shard, replicas).
 *
 * @example
 * ```ts
 * class MyBank extends StackedExpertBank {
 *   forwardWithDispatch(xTD, plan, d, mode) { this.assertLive('MyBank', 'forward'); ... }
 * }
 * ```
 */
export abstract class StackedExpertBank implements ExpertBank {
  readonly numExperts: number;
  readonly dModel: number;
  readonly dFF: number;
  readonly activation: ExpertActivation;
  readonly variables: Readonly<Record<string, tf.Variable>>;
  private disposed = false;

  protected constructor(shape: BankShape, variables: Readonly<Record<string, tf.Variable>>) {
    this.numExperts = shape.numExperts;
    this.dModel = shape.dModel;
    this.dFF = shape.dFF;
    this.activation = shape.activation;
    this.variables = variables;
  }

  abstract forwardWithDispatch(
    xTD: Tensor2D,
    plan: RoutingPlan,
    dispatch: DispatchPlan,
    computeMode: ComputeMode,
  ): BankOutput;

  /** Weights of one expert. */
  paramsPerExpert(): number {
    return matricesOf(this.activation) * this.dModel * this.dFF;
  }

  /** Weights of all E experts. */
  numParams(): number {
    return this.numExperts * this.paramsPerExpert();
  }

  /** Matrix-multiply FLOPs (2 per multiply-add) of one (token, expert) assignment's forward pass. */
  flopsPerAssignment(): number {
    return 2 * this.paramsPerExpert();
  }

  /** Releases the variables. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const v of Object.values(this.variables)) v.dispose();
  }

  /** Throws STATE_INVALID naming the bank and `method` once the bank is disposed. */
  protected assertLive(bank: string, method: string): void {
    if (this.disposed)
      throw new SwitchyardError('STATE_INVALID', `${bank} was disposed; it cannot run ${method}()`);
  }
}
