/**
 * Dense FFNs: the baseline with the experts' interface, and the shared experts every token passes
 * through (DeepSeekMoE), optionally behind Qwen-MoE's sigmoid gate.
 *
 * Shape letters: T tokens, D model width, F hidden width (Fs: shared hidden width).
 */
import {
  checkDtype,
  checkShape,
  gelu,
  invalidArgument,
  matMul,
  type Rng,
  relu,
  SwitchyardError,
  sigmoid,
  swiglu,
  type Tensor2D,
  tf,
} from '@switchyard/tensor';
import {
  type DenseFFNConfig,
  type ExpertActivation,
  matricesOf,
  resolveDenseConfig,
  resolveSharedConfig,
  type SharedExpertsConfig,
} from './config';

/** Checks a token batch [T, D] of float32. */
export function checkTokens(fn: string, xTD: unknown, D: number): asserts xTD is Tensor2D {
  if (!(xTD instanceof tf.Tensor)) throw invalidArgument(fn, 'xTD', `a 2-D float32 tensor [T, ${D}]`, xTD);
  checkShape(fn, 'xTD', xTD, [null, D], 'TD');
  checkDtype(fn, 'xTD', xTD, ['float32']);
}

/** `act(x W1) W2`, or `(silu(x W1) * (x W3)) W2` for SwiGLU, on the tape. */
export function ffnForward(
  xTD: Tensor2D,
  w1DF: tf.Tensor,
  w3DF: tf.Tensor | undefined,
  w2FD: tf.Tensor,
  activation: ExpertActivation,
): Tensor2D {
  return tf.tidy(() => {
    const h1 = matMul(xTD, w1DF);
    let a: tf.Tensor;
    if (activation === 'swiglu') a = swiglu(h1, matMul(xTD, w3DF!));
    else if (activation === 'gelu') a = gelu(h1);
    else a = relu(h1);
    return matMul(a, w2FD) as Tensor2D;
  });
}

function newVariable(rng: Rng, shape: number[], std: number): tf.Variable {
  const init = rng.normalTensor(shape, 0, std);
  const v = tf.variable(init, true, undefined, 'float32');
  init.dispose();
  return v;
}

function assertLive(disposed: boolean, what: string): void {
  if (disposed) throw new SwitchyardError('STATE_INVALID', `${what} was disposed; it cannot run forward()`);
}

/**
 * A dense FFN (SwiGLU, GELU or ReLU) with the same interface and weight layout as one expert:
 * variables `w1` [D, F], `w3` [D, F] (SwiGLU only), `w2` [F, D].
 *
 * When to use: as the dense baseline an MoE layer is compared against, or inside a dense block.
 *
 * @example
 * ```ts
 * const ffn = new DenseFFN({ dModel: 64, dFF: 256, activation: 'swiglu' }, new Rng(0));
 * const yTD = ffn.forward(xTD); // [T, 64]
 * ffn.dispose();
 * ```
 */
export class DenseFFN {
  readonly dModel: number;
  readonly dFF: number;
  readonly activation: ExpertActivation;
  /** Trainable weights: `w1`, `w3` (SwiGLU only), `w2`. */
  readonly variables: Readonly<Record<string, tf.Variable>>;
  private disposed = false;

  constructor(config: DenseFFNConfig, rng: Rng) {
    const cfg = resolveDenseConfig('DenseFFN', config);
    this.dModel = cfg.dModel;
    this.dFF = cfg.dFF;
    this.activation = cfg.activation;
    const { dModel: D, dFF: F, initStd } = cfg;
    const vars: Record<string, tf.Variable> = { w1: newVariable(rng.fork('w1'), [D, F], initStd) };
    if (cfg.activation === 'swiglu') vars.w3 = newVariable(rng.fork('w3'), [D, F], initStd);
    vars.w2 = newVariable(rng.fork('w2'), [F, D], initStd);
    this.variables = vars;
  }

  /** Applies the FFN to every token: [T, D] -> [T, D]. */
  forward(xTD: Tensor2D): Tensor2D {
    assertLive(this.disposed, 'DenseFFN');
    checkTokens('DenseFFN.forward', xTD, this.dModel);
    const v = this.variables;
    return ffnForward(xTD, v.w1!, v.w3, v.w2!, this.activation);
  }

  /** Number of weights. */
  numParams(): number {
    return matricesOf(this.activation) * this.dModel * this.dFF;
  }

  /** Matrix-multiply FLOPs (2 per multiply-add) of one token's forward pass. */
  flopsPerToken(): number {
    return 2 * this.numParams();
  }

  /** Releases the variables. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const v of Object.values(this.variables)) v.dispose();
  }
}

/** Options of {@link SharedExperts}: the shared-experts config plus the layer's width and FFN kind. */
export interface SharedExpertsOptions extends SharedExpertsConfig {
  /** Model width D. */
  readonly dModel: number;
  /** FFN kind (the routed experts'). */
  readonly activation: ExpertActivation;
  /** Standard deviation of the normal weight initialisation. Default 0.02. */
  readonly initStd?: number;
}

/**
 * Shared experts: `count` FFNs every token passes through, computed as one FFN of hidden width
 * count * dFF (the same function: hidden units are independent), optionally scaled per token by
 * sigmoid(x Wg) (Qwen-MoE). Variables `w1` [D, Fs], `w3` [D, Fs] (SwiGLU), `w2` [Fs, D], `gate` [D, 1].
 *
 * When to use: inside {@link MoELayer} via `shared`; on its own to test or reuse the block.
 *
 * @example
 * ```ts
 * const shared = new SharedExperts({ count: 2, dFF: 128, gate: true, dModel: 64, activation: 'swiglu' }, new Rng(0));
 * const yTD = shared.forward(xTD); // [T, 64]
 * ```
 */
export class SharedExperts {
  readonly count: number;
  readonly dFF: number;
  readonly gate: boolean;
  readonly dModel: number;
  readonly activation: ExpertActivation;
  /** Trainable weights: `w1`, `w3` (SwiGLU only), `w2`, and `gate` when gated. */
  readonly variables: Readonly<Record<string, tf.Variable>>;
  private readonly ffn: DenseFFN;
  private readonly gateVar: tf.Variable | undefined;
  private disposed = false;

  constructor(options: SharedExpertsOptions, rng: Rng) {
    const fn = 'SharedExperts';
    const shared = resolveSharedConfig(fn, options, '');
    if (shared.count < 1) throw invalidArgument(fn, 'count', 'an integer >= 1', options.count);
    const dense = resolveDenseConfig(fn, { ...options, dFF: shared.count * shared.dFF });
    this.count = shared.count;
    this.dFF = shared.dFF;
    this.gate = shared.gate;
    this.dModel = dense.dModel;
    this.activation = dense.activation;
    this.ffn = new DenseFFN(dense, rng.fork('ffn'));
    const vars: Record<string, tf.Variable> = { ...this.ffn.variables };
    if (shared.gate) {
      this.gateVar = newVariable(rng.fork('gate'), [dense.dModel, 1], dense.initStd);
      vars.gate = this.gateVar;
    }
    this.variables = vars;
  }

  /** Shared output for every token: [T, D] -> [T, D]. */
  forward(xTD: Tensor2D): Tensor2D {
    assertLive(this.disposed, 'SharedExperts');
    checkTokens('SharedExperts.forward', xTD, this.dModel);
    return tf.tidy(() => {
      const yTD = this.ffn.forward(xTD);
      return this.gateVar ? (tf.mul(yTD, sigmoid(matMul(xTD, this.gateVar))) as Tensor2D) : yTD; // [T, D] * [T, 1]
    });
  }

  /** Number of weights (gate included). */
  numParams(): number {
    return this.ffn.numParams() + (this.gate ? this.dModel : 0);
  }

  /** Matrix-multiply FLOPs of one token's forward pass (gate included). */
  flopsPerToken(): number {
    return 2 * this.numParams();
  }

  /** Releases the variables. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.ffn.dispose();
    this.gateVar?.dispose();
  }
}
