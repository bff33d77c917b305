/**
 * A forward pass recorded on TensorFlow.js's gradient tape and kept until its backward runs, so that
 * a pipeline stage can run F now and B (or Bi, then W) later, in the schedule's order, without
 * running the forward again.
 *
 * tfjs's public gradient calls (`tf.grads`, `tf.variableGrads`) run the forward and the backward in
 * one call. This module records the tape itself (the engine's `state.activeTape`, the same list those
 * calls record into) and walks it backwards with the gradient functions the engine stored on each
 * node, exactly as tfjs's own `backpropagateGradients` does. That makes the split of zero-bubble
 * schedules real:
 *
 * - `Bi` (input gradient) walks only the nodes whose inputs depend on the stage input X, and
 *   evaluates only the input-side gradient of each; a matrix product `h W` yields `dh` here, not `dW`;
 * - `W` (weight gradient) later walks the nodes that read a weight, with the output gradients `Bi`
 *   left behind, and evaluates the weight-side gradients (`h^T dy`).
 *
 * Between the two, only what W needs stays alive: the saved tensors of the nodes that read a weight
 * and the gradients of their outputs; everything else the forward saved is released by Bi.
 *
 * One limit: an op written with `tf.customGrad` computes all its input gradients in one call (tfjs
 * evaluates its backward eagerly). When such an op reads both X and a weight (the grouped expert FFN
 * of an MoE layer), its weight gradient is computed during Bi and only handed over by W. Its
 * gradients are computed once either way: nothing is recomputed.
 *
 * Letters: X the stage's input tensors, V the trainable variables the forward read, Y the outputs
 * gradients are seeded at (the activation sent on, an auxiliary loss).
 */
import { SwitchyardError, type Tensor, tf } from '@switchyard/tensor';

/** One node of the engine's tape: a kernel (or customGrad op) call with its inputs, outputs and backward. */
type TapeNode = NonNullable<ReturnType<typeof tf.engine>['state']['activeTape']>[number];

/** The input-side gradients of one node, by input name (what the node's backward returns). */
type GradientThunks = Readonly<Record<string, () => Tensor>>;

/** Where a {@link ForwardTape} stands: recorded, input gradients taken (W pending), or finished. */
export type TapeStage = 'recorded' | 'input-done' | 'done';

/** A seed of the backward: an output of the forward and the gradient of the objective with respect to it. */
export interface GradientSeed {
  readonly output: Tensor;
  readonly dy: Tensor;
}

/**
 * Runs `fn` with the gradient tape on and returns its result with the recorded {@link ForwardTape}.
 * Tensors `fn` creates and does not return are released (as in `tf.tidy`); what the backward needs
 * is kept by the tape until its backward ends or it is disposed.
 *
 * When to use: the forward (F) of a pipeline stage whose backward runs later.
 *
 * @example
 * ```ts
 * const x = tf.tensor2d([[1, 2]]);
 * const { result: y, tape } = recordForward(() => tf.matMul(x, w)); // w a tf.Variable [2, 3]
 * const [dx] = tape.backwardInputs([{ output: y, dy: tf.onesLike(y) }], [x]); // Bi
 * const dW = tape.backwardWeights(); // W: Map { w => [2, 3] }
 * ```
 */
export function recordForward<R>(fn: () => R): { result: R; tape: ForwardTape } {
  const state = tf.engine().state;
  if (state.gradientDepth > 0) {
    throw new SwitchyardError(
      'STATE_INVALID',
      'recordForward() cannot run inside another gradient computation (tf.grads, tf.variableGrads, or another recordForward)',
    );
  }
  const before = state.activeTape;
  state.activeTape = [];
  state.gradientDepth = 1;
  let nodes: TapeNode[] = [];
  try {
    const result = tf.tidy(fn as () => tf.TensorContainer) as R;
    nodes = state.activeTape;
    return { result, tape: new ForwardTape(nodes) };
  } catch (e) {
    releaseSaved(state.activeTape ?? []);
    throw e;
  } finally {
    state.gradientDepth = 0;
    state.activeTape = before;
  }
}

/**
 * The tape of one recorded forward: its backward runs once, whole ({@link ForwardTape.backward}) or
 * split into input gradients ({@link ForwardTape.backwardInputs}) and weight gradients
 * ({@link ForwardTape.backwardWeights}), in that order.
 *
 * When to use: through {@link recordForward}; the pipeline executor keeps one per (micro-batch,
 * stage) between its F and its B, or between its Bi and its W.
 */
export class ForwardTape {
  private stage: TapeStage = 'recorded';
  /** Tensor id -> accumulated gradient of the objective (ours: kept, released by us). */
  private readonly grads = new Map<number, Tensor>();
  /** Tensors that depend on X (the stage input). */
  private fromX = new Set<number>();
  /** Tensors that lead to a seeded output. */
  private toY = new Set<number>();
  /** Tensors that depend on a trainable variable and not on X. */
  private weightOnly = new Set<number>();
  /** The nodes W walks: they read a weight-only tensor and lead to Y. */
  private weightNodes: TapeNode[] = [];
  /** Weight-side gradients a customGrad node computed during Bi, by node id and input name. */
  private readonly early = new Map<number, Map<string, Tensor>>();

  /** @internal Built by {@link recordForward}. */
  constructor(private nodes: TapeNode[]) {}

  /** Where the tape stands. */
  get state(): TapeStage {
    return this.stage;
  }

  /** Number of recorded ops (tfjs kernels and customGrad ops). */
  get size(): number {
    return this.nodes.length;
  }

  /**
   * The input gradient (Bi): the gradient of the objective with respect to each of `inputs`, given
   * the gradient `dy` of each seeded output (their sum is the objective's gradient, e.g. the
   * activation's gradient from the next stage plus 1 for an auxiliary loss). An input the outputs do
   * not depend on gets undefined. Keeps what {@link ForwardTape.backwardWeights} needs and releases
   * the rest of what the forward saved. The seeds stay the caller's.
   */
  backwardInputs(seeds: readonly GradientSeed[], inputs: readonly Tensor[]): (Tensor | undefined)[] {
    this.expect('recorded', 'backwardInputs');
    const grads = this.grads;
    for (const { output, dy } of seeds) {
      if (dy.dtype !== 'float32' || !sameShape(dy.shape, output.shape)) {
        throw new SwitchyardError(
          'SHAPE_MISMATCH',
          `a gradient seed passed to ForwardTape.backwardInputs() must be float32 [${output.shape.join(', ')}] like its output, got ${dy.dtype} [${dy.shape.join(', ')}]`,
        );
      }
      accumulate(grads, output.id, tf.keep(tf.clone(dy)));
    }
    this.toY = leadsTo(
      this.nodes,
      seeds.map((s) => s.output.id),
    );
    this.fromX = dependOn(
      this.nodes,
      inputs.map((x) => x.id),
    );
    const variableIds = new Set<number>();
    for (const node of this.nodes) {
      for (const t of Object.values(node.inputs)) {
        if (t instanceof tf.Variable && t.trainable && !this.fromX.has(t.id)) variableIds.add(t.id);
      }
    }
    const fromV = dependOn(this.nodes, [...variableIds]);
    this.weightOnly = new Set([...fromV].filter((id) => !this.fromX.has(id)));
    this.weightNodes = this.nodes.filter(
      (n) => leadsToY(n, this.toY) && Object.values(n.inputs).some((t) => this.weightOnly.has(t.id)),
    );
    const weightNodeIds = new Set(this.weightNodes.map((n) => n.id));
    // W reads the gradients of its nodes' outputs; Bi needs the others only until their node ran.
    const keepGrads = new Set<number>();
    for (const node of this.weightNodes) for (const o of node.outputs) keepGrads.add(o.id);
    const inputIds = new Set(inputs.map((x) => x.id));

    const result = tf.tidy(() => {
      for (let i = this.nodes.length - 1; i >= 0; i--) {
        const node = this.nodes[i]!;
        if (!leadsToY(node, this.toY) || !Object.values(node.inputs).some((t) => this.fromX.has(t.id)))
          continue;
        const thunks = nodeGradient(node, grads);
        for (const [name, input] of Object.entries(node.inputs)) {
          if (this.fromX.has(input.id)) accumulate(grads, input.id, tf.keep(evaluate(node, name, thunks)));
        }
        for (const o of node.outputs) {
          if (keepGrads.has(o.id) || inputIds.has(o.id)) continue;
          grads.get(o.id)?.dispose();
          grads.delete(o.id);
        }
        // A customGrad op computed its weight gradients in the same call: hand them to W.
        if (weightNodeIds.has(node.id) && tf.getGradient(node.kernelName) == null) {
          const got = new Map<string, Tensor>();
          for (const [name, input] of Object.entries(node.inputs)) {
            if (this.weightOnly.has(input.id)) got.set(name, tf.keep(evaluate(node, name, thunks)));
          }
          this.early.set(node.id, got);
        }
      }
      return inputs.map((x) => {
        const g = grads.get(x.id);
        return g === undefined ? undefined : tf.clone(g);
      });
    });

    // Keep the gradients of the outputs W's nodes read, and the saved tensors of the kernels W calls.
    for (const [id, g] of grads) {
      if (!keepGrads.has(id)) {
        g.dispose();
        grads.delete(id);
      }
    }
    releaseSaved(this.nodes.filter((n) => !weightNodeIds.has(n.id) || this.early.has(n.id)));
    this.stage = 'input-done';
    return result;
  }

  /**
   * The weight gradients (W) left by {@link ForwardTape.backwardInputs}: per trainable variable the
   * forward read, the gradient of the objective. Releases everything the tape held.
   */
  backwardWeights(): Map<tf.Variable, Tensor> {
    this.expect('input-done', 'backwardWeights');
    const grads = this.grads;
    const variables = new Map<number, tf.Variable>();
    try {
      tf.tidy(() => {
        for (let i = this.weightNodes.length - 1; i >= 0; i--) {
          const node = this.weightNodes[i]!;
          const early = this.early.get(node.id);
          const thunks = early === undefined ? nodeGradient(node, grads) : undefined;
          for (const [name, input] of Object.entries(node.inputs)) {
            if (!this.weightOnly.has(input.id)) continue;
            if (input instanceof tf.Variable) variables.set(input.id, input);
            const dx = early !== undefined ? early.get(name)! : evaluate(node, name, thunks!);
            accumulate(grads, input.id, tf.keep(early !== undefined ? tf.clone(dx) : dx));
          }
        }
      });
      const out = new Map<tf.Variable, Tensor>();
      for (const [id, v] of variables) {
        out.set(v, grads.get(id)!);
        grads.delete(id);
      }
      return out;
    } finally {
      this.dispose();
      this.stage = 'done';
    }
  }

  /**
   * The whole backward (B): input gradients, then weight gradients, in one call.
   */
  backward(
    seeds: readonly GradientSeed[],
    inputs: readonly Tensor[],
  ): { inputGrads: (Tensor | undefined)[]; weightGrads: Map<tf.Variable, Tensor> } {
    const inputGrads = this.backwardInputs(seeds, inputs);
    try {
      return { inputGrads, weightGrads: this.backwardWeights() };
    } catch (e) {
      tf.dispose(inputGrads.filter((g): g is Tensor => g !== undefined));
      throw e;
    }
  }

  /** Releases everything the tape holds (safe to call more than once, and after the backward). */
  dispose(): void {
    releaseSaved(this.nodes);
    for (const g of this.grads.values()) g.dispose();
    this.grads.clear();
    for (const m of this.early.values()) for (const g of m.values()) g.dispose();
    this.early.clear();
    this.nodes = [];
    this.weightNodes = [];
    this.stage = 'done';
  }

  private expect(stage: TapeStage, method: string): void {
    if (this.stage !== stage) {
      throw new SwitchyardError(
        'STATE_INVALID',
        `ForwardTape.${method}() needs a tape in state '${stage}', this one is '${this.stage}'${
          this.stage === 'done' ? ' (its backward already ran, or it was disposed)' : ''
        }`,
      );
    }
  }
}

/** Ids of the tensors that depend on any of `ids`, through the nodes in tape order. */
function dependOn(nodes: readonly TapeNode[], ids: readonly number[]): Set<number> {
  const out = new Set(ids);
  for (const node of nodes) {
    if (Object.values(node.inputs).some((t) => out.has(t.id))) for (const o of node.outputs) out.add(o.id);
  }
  return out;
}

/** Ids of the tensors some seeded output depends on (the seeds included), walking the tape backwards. */
function leadsTo(nodes: readonly TapeNode[], seedIds: readonly number[]): Set<number> {
  const out = new Set(seedIds);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i]!;
    if (node.outputs.some((o) => out.has(o.id))) for (const t of Object.values(node.inputs)) out.add(t.id);
  }
  return out;
}

function leadsToY(node: TapeNode, toY: ReadonlySet<number>): boolean {
  return node.outputs.some((o) => toY.has(o.id));
}

/** The node's backward with its outputs' gradients (zeros where an output leads nowhere, as tfjs does). */
function nodeGradient(node: TapeNode, grads: ReadonlyMap<number, Tensor>): GradientThunks {
  if (node.gradient === undefined) {
    throw new SwitchyardError(
      'STATE_INVALID',
      `cannot compute a gradient: no gradient function for ${node.kernelName}`,
    );
  }
  return node.gradient(node.outputs.map((o) => grads.get(o.id) ?? (null as unknown as Tensor)));
}

/** One input's gradient from a node's backward, checked as tfjs checks it. */
function evaluate(node: TapeNode, name: string, thunks: GradientThunks): Tensor {
  const thunk = thunks[name];
  if (thunk === undefined) {
    throw new SwitchyardError(
      'STATE_INVALID',
      `cannot backprop through input ${name} of ${node.kernelName}: its gradient gives ${Object.keys(thunks).join(', ')}`,
    );
  }
  const dx = thunk();
  const x = node.inputs[name]!;
  if (dx.dtype !== 'float32' || !sameShape(dx.shape, x.shape)) {
    throw new SwitchyardError(
      'STATE_INVALID',
      `the gradient of input '${name}' of ${node.kernelName} must be float32 [${x.shape.join(', ')}], got ${dx.dtype} [${dx.shape.join(', ')}]`,
    );
  }
  return dx;
}

/** Adds `g` (kept) to the gradient of tensor `id`, releasing the previous sum. */
function accumulate(grads: Map<number, Tensor>, id: number, g: Tensor): void {
  const cur = grads.get(id);
  if (cur === undefined) {
    grads.set(id, g);
    return;
  }
  grads.set(id, tf.keep(tf.add(cur, g)));
  cur.dispose();
  g.dispose();
}

function releaseSaved(nodes: readonly TapeNode[]): void {
  for (const node of nodes) {
    for (const t of node.saved ?? []) t.dispose();
    node.saved = [];
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
