/**
 * The compressed expert bank: E experts in G groups, each expert matrix stored as its group's shared
 * basis plus a rank-R residual, `W_i = S_g + U_i V_i^T`, and computed from the factors:
 * `x W_i = x S_g + (x U_i) V_i^T`, or with W_i materialised first when that costs fewer FLOPs (an
 * expert with many rows). Only the groups a batch routes to are read. Factors of cold groups can stay
 * on the host and be loaded on use (offload, for inference).
 *
 * Shape letters: T tokens, S dispatched rows, c one expert's rows, D model width, F expert hidden
 * width, E experts, G groups, R rank, I = d_in and O = d_out of one matrix.
 */
import {
  type BankOutput,
  buildDispatch,
  type ComputeMode,
  checkBankInput,
  combine,
  type DispatchPlan,
  dispatch,
  type ExpertActivation,
  type ExpertBank,
  type ExpertWeights,
  groupedExperts,
  resolveComputeMode,
  splitRowsRaw,
  stackExperts,
} from '@switchyard/experts';
import type { RoutingPlan } from '@switchyard/routing';
import {
  batchMatMul,
  checkInt,
  checkOneOf,
  copyRows,
  customGrad,
  type GradSave,
  gatherRows,
  gelu,
  invalidArgument,
  SwitchyardError,
  type Tensor2D,
  type Tensor3D,
  tf,
} from '@switchyard/tensor';
import type { ExpertGrouping } from './cluster';
import { groupingFromAssignment } from './cluster';
import {
  checkRank,
  type FactorizeOptions,
  type FactorizeResult,
  factorizeExperts,
  type LayerFactors,
  layerFactors,
  type MatrixFactors,
  type MatrixName,
  matrixShapes,
} from './factorize';

/** When an expert's matrix is materialised (`S_g + U_i V_i^T`, then one product) instead of used factored. */
export type MaterializeMode = 'auto' | 'never' | 'always';

/** Options of {@link CompressedExperts}. */
export interface CompressedExpertsOptions {
  /**
   * `auto` (default): materialise W_i for an expert with more rows c than `d_in d_out / (d_in + d_out)`
   * (then it costs fewer FLOPs, forward and backward); `never`: always `x S_g + (x U_i) V_i^T`;
   * `always`: always materialise.
   */
  readonly materialize?: MaterializeMode;
  /**
   * Keep the factors on the host and at most `residentGroups` groups on the backend, loading a group
   * when a batch routes to it and evicting the least recently used. For inference: an offloaded bank
   * holds no trainable variables.
   */
  readonly offload?: { readonly residentGroups: number };
}

/** Counters of a {@link CompressedExperts} bank. */
export interface CompressedExpertsStats {
  /** Per group: forward passes that routed at least one row to it. */
  readonly groupUses: readonly number[];
  /** Offload: groups copied to the backend. */
  readonly loads: number;
  /** Offload: groups released from the backend. */
  readonly evictions: number;
  /** Offload: groups on the backend now (all of them without offload). */
  readonly resident: readonly number[];
}

/** Tensors of one matrix for one group: the basis and, per member expert, U_i and V_i^T. */
interface GroupTensors {
  readonly shared: tf.Tensor2D;
  readonly u: ReadonlyMap<number, tf.Tensor2D>;
  readonly vt: ReadonlyMap<number, tf.Tensor2D>;
}

/** Where the forward reads an expert's factors from. */
interface FactorSource {
  /** Whether each tensor returned is a new copy the forward may release (not a cached one). */
  readonly owned: boolean;
  shared(m: MatrixName, g: number): tf.Tensor;
  u(m: MatrixName, e: number): tf.Tensor;
  vt(m: MatrixName, e: number): tf.Tensor;
}

const FN = 'CompressedExperts';

/** `a b^T` without a transposed-operand product on wasm (10-40x slower there). */
function mulBT(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  return tf.getBackend() === 'wasm' ? tf.matMul(a, tf.transpose(b)) : tf.matMul(a, b, false, true);
}

/** `a^T b`, likewise. */
function mulAT(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  return tf.getBackend() === 'wasm' ? tf.matMul(tf.transpose(a), b) : tf.matMul(a, b, true, false);
}

const INV_SQRT_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/**
 * Shared-basis low-rank experts: for every expert matrix (w1, w3 for SwiGLU, w2) a basis per group
 * and rank-R factors per expert, `W_i = S_g + U_i V_i^T`. Trainable variables (each with a leading
 * axis over groups or experts): `w1_shared` [G, D, F], `w1_u` [E, D, R], `w1_vt` [E, R, F], the same
 * for `w3` (SwiGLU), and `w2_shared` [G, F, D], `w2_u` [E, F, R], `w2_vt` [E, R, D]. A layer exposes
 * them as `experts.<name>`.
 *
 * When to use: install it in a layer with `MoELayer.setExperts` (or {@link compressModel} does it
 * for a whole model) to run, fine-tune or serve a model with compressed experts.
 *
 * @example
 * ```ts
 * const { factors } = factorizeExperts(layer.experts.weights(), 'swiglu', { rank: 16, grouping });
 * layer.setExperts(new CompressedExperts(factors)).dispose();
 * ```
 */
export class CompressedExperts implements ExpertBank {
  readonly numExperts: number;
  readonly dModel: number;
  readonly dFF: number;
  readonly activation: ExpertActivation;
  /** R: rank of every residual. */
  readonly rank: number;
  readonly grouping: ExpertGrouping;
  readonly materialize: MaterializeMode;
  /** Offload: groups kept on the backend at most (undefined without offload). */
  readonly residentGroups: number | undefined;
  readonly variables: Readonly<Record<string, tf.Variable>>;
  private readonly matrices: readonly [MatrixName, number, number][];
  /** Offload: the factors on the host. */
  private readonly host: LayerFactors | undefined;
  /** Offload: resident groups, least recently used first. */
  private readonly cache = new Map<number, Map<MatrixName, GroupTensors>>();
  private readonly uses: number[];
  private loads = 0;
  private evictions = 0;
  private disposed = false;

  /** A bank holding `factors` (copied; the caller keeps the arrays). */
  constructor(factors: LayerFactors, options: CompressedExpertsOptions = {}) {
    if (factors === null || typeof factors !== 'object' || factors.matrices === undefined)
      throw invalidArgument(FN, 'factors', 'a LayerFactors object (from factorizeExperts)', factors);
    const { numExperts: E, dModel: D, dFF: F, activation } = factors;
    checkInt(FN, 'factors.numExperts', E, { min: 1 });
    checkInt(FN, 'factors.dModel', D, { min: 1 });
    checkInt(FN, 'factors.dFF', F, { min: 1 });
    checkOneOf(FN, 'factors.activation', activation, ['swiglu', 'gelu', 'relu'] as const);
    const R = checkRank(FN, factors.rank, D, F);
    const grouping = groupingFromAssignment(factors.grouping?.groupOf ?? []);
    if (grouping.numExperts !== E)
      throw invalidArgument(FN, 'factors.grouping', `a grouping of ${E} experts`, grouping.numExperts);
    if (options === null || typeof options !== 'object')
      throw invalidArgument(FN, 'options', 'a CompressedExpertsOptions object', options);
    this.materialize = checkOneOf(FN, 'options.materialize', options.materialize ?? 'auto', [
      'auto',
      'never',
      'always',
    ] as const);
    const G = grouping.numGroups;
    if (options.offload !== undefined) {
      if (options.offload === null || typeof options.offload !== 'object')
        throw invalidArgument(FN, 'options.offload', '{ residentGroups }', options.offload);
      this.residentGroups = checkInt(FN, 'options.offload.residentGroups', options.offload.residentGroups, {
        min: 1,
        max: G,
      });
    }
    this.numExperts = E;
    this.dModel = D;
    this.dFF = F;
    this.activation = activation;
    this.rank = R;
    this.grouping = grouping;
    this.matrices = matrixShapes(activation, D, F);
    this.uses = new Array<number>(G).fill(0);
    const copies: Partial<Record<MatrixName, MatrixFactors>> = {};
    for (const [m, I, O] of this.matrices) {
      const f = factors.matrices[m];
      const want = [G * I * O, E * I * R, E * R * O];
      if (
        f === undefined ||
        f.dIn !== I ||
        f.dOut !== O ||
        f.sharedGIO?.length !== want[0] ||
        f.uEIR?.length !== want[1] ||
        f.vtERO?.length !== want[2]
      )
        throw invalidArgument(
          FN,
          `factors.matrices.${m}`,
          `factors of a [${I}, ${O}] matrix: shared [${G}, ${I}, ${O}], u [${E}, ${I}, ${R}], vt [${E}, ${R}, ${O}]`,
          f === undefined
            ? f
            : `shared ${f.sharedGIO?.length}, u ${f.uEIR?.length}, vt ${f.vtERO?.length} values`,
        );
      copies[m] = {
        dIn: I,
        dOut: O,
        sharedGIO: f.sharedGIO.slice(),
        uEIR: f.uEIR.slice(),
        vtERO: f.vtERO.slice(),
      };
    }
    const all = { ...factors, grouping, rank: R, matrices: copies as LayerFactors['matrices'] };
    if (this.residentGroups !== undefined) {
      this.host = all;
      this.variables = {};
    } else {
      const vars: Record<string, tf.Variable> = {};
      for (const [m, I, O] of this.matrices) {
        const f = copies[m]!;
        const make = (data: Float32Array, shape: [number, number, number]) => {
          const t = tf.tensor3d(data, shape);
          const variable = tf.variable(t, true, undefined, 'float32');
          t.dispose();
          return variable;
        };
        vars[`${m}_shared`] = make(f.sharedGIO, [G, I, O]);
        vars[`${m}_u`] = make(f.uEIR, [E, I, R]);
        vars[`${m}_vt`] = make(f.vtERO, [E, R, O]);
      }
      this.variables = vars;
    }
  }

  /**
   * Compresses stacked expert weights ({@link factorizeExperts}) and returns the bank with the
   * reconstruction error of every expert.
   *
   * @example
   * ```ts
   * const { bank, errors } = CompressedExperts.fromWeights(experts.weights(), 'swiglu', { rank: 8, grouping });
   * ```
   */
  static fromWeights(
    weights: ExpertWeights,
    activation: ExpertActivation,
    options: FactorizeOptions,
    bankOptions: CompressedExpertsOptions = {},
  ): { bank: CompressedExperts; errors: FactorizeResult['errors'] } {
    const { factors, errors } = factorizeExperts(weights, activation, options);
    return { bank: new CompressedExperts(factors, bankOptions), errors };
  }

  /** Host copies of every factor (from the variables, or the offloaded arrays). */
  factors(): LayerFactors {
    this.assertLive('factors');
    if (this.host) return this.host;
    const matrices: Partial<Record<MatrixName, MatrixFactors>> = {};
    for (const [m, I, O] of this.matrices) {
      const v = this.variables;
      matrices[m] = {
        dIn: I,
        dOut: O,
        sharedGIO: v[`${m}_shared`]!.dataSync() as Float32Array,
        uEIR: v[`${m}_u`]!.dataSync() as Float32Array,
        vtERO: v[`${m}_vt`]!.dataSync() as Float32Array,
      };
    }
    return layerFactors(this, this.rank, this.grouping, matrices);
  }

  /**
   * Every expert's matrices materialised, `W_i = S_g + U_i V_i^T`, as stacked weights [E, D, F] /
   * [E, F, D] (new tensors the caller disposes): what a checkpoint of full experts stores.
   */
  materializedWeights(): ExpertWeights {
    this.assertLive('materializedWeights');
    const f = this.factors();
    const { numExperts: E, rank: R } = this;
    const groupOf = this.grouping.groupOf;
    const out: Partial<Record<MatrixName, Tensor3D>> = {};
    for (const [m, I, O] of this.matrices) {
      const mf = f.matrices[m]!;
      const w = new Float32Array(E * I * O);
      for (let e = 0; e < E; e++) {
        const g = groupOf[e]!;
        w.set(mf.sharedGIO.subarray(g * I * O, (g + 1) * I * O), e * I * O);
        for (let i = 0; i < I; i++)
          for (let k = 0; k < R; k++) {
            const u = mf.uEIR[(e * I + i) * R + k]!;
            if (u === 0) continue;
            const base = e * I * O + i * O;
            const vt = (e * R + k) * O;
            for (let o = 0; o < O; o++) w[base + o]! += u * mf.vtERO[vt + o]!;
          }
      }
      out[m] = tf.tensor3d(w, [E, I, O]);
    }
    return { w1EDF: out.w1!, ...(out.w3 ? { w3EDF: out.w3 } : {}), w2EFD: out.w2! };
  }

  /** Weights one (token, expert) assignment uses: per matrix the group's basis and the expert's factors. */
  paramsPerExpert(): number {
    return this.matrices.reduce((n, [, I, O]) => n + I * O + this.rank * (I + O), 0);
  }

  /** Weights of the layer: G bases and E pairs of factors per matrix. */
  numParams(): number {
    const { numExperts: E, rank: R } = this;
    const G = this.grouping.numGroups;
    return this.matrices.reduce((n, [, I, O]) => n + G * I * O + E * R * (I + O), 0);
  }

  /** Matrix-multiply FLOPs (2 per multiply-add) of one assignment computed from the factors. */
  flopsPerAssignment(): number {
    return 2 * this.paramsPerExpert();
  }

  /** Counters: groups used, offload loads and evictions, groups resident. */
  stats(): CompressedExpertsStats {
    return {
      groupUses: [...this.uses],
      loads: this.loads,
      evictions: this.evictions,
      resident:
        this.residentGroups === undefined
          ? Array.from({ length: this.grouping.numGroups }, (_, g) => g)
          : [...this.cache.keys()].sort((a, b) => a - b),
    };
  }

  /** Applies the experts to a routed batch (see {@link ExpertBank.forwardWithDispatch}). */
  forward(xTD: Tensor2D, plan: RoutingPlan, computeMode: ComputeMode = 'auto'): Tensor2D {
    return this.forwardWithDispatch(xTD, plan, buildDispatch(plan), computeMode).yTD;
  }

  /**
   * The routed output of a batch. Dropless: one pass over the active experts from their factors, with
   * a hand-written backward (gradients to the bases and factors of the groups used, zero elsewhere).
   * Padded (native backends with a capacity): all experts materialised, then batched products.
   */
  forwardWithDispatch(
    xTD: Tensor2D,
    plan: RoutingPlan,
    d: DispatchPlan,
    computeMode: ComputeMode = 'auto',
  ): BankOutput {
    this.assertLive('forward');
    checkBankInput(`${FN}.forward`, this, xTD, plan, d);
    const mode = this.host ? 'dropless' : resolveComputeMode(computeMode, d.capacity);
    const active = Array.from(d.countsE).flatMap((c, e) => (c > 0 ? [e] : []));
    const groups = [...new Set(active.map((e) => this.grouping.groupOf[e]!))].sort((a, b) => a - b);
    // The padded path materialises every expert, so it reads every group.
    for (const g of mode === 'padded' ? this.uses.map((_, i) => i) : groups) this.uses[g]!++;
    if (this.host) this.loadGroups(groups);
    const yTD = tf.tidy(() => {
      const xSD = dispatch(xTD, d);
      let ySD: Tensor2D;
      if (d.numRows === 0) ySD = tf.zeros([0, this.dModel]) as Tensor2D;
      else if (mode === 'padded')
        ySD = groupedExperts(xSD, d, this.materializedOnTape(), this.activation, 'padded');
      else if (this.host) ySD = this.droplessOffloaded(xSD, d, active);
      else ySD = this.droplessResident(xSD, d, active);
      return combine(ySD, plan.topkWeightTK, d);
    });
    if (this.host) this.evictDown();
    return { yTD, computeMode: mode };
  }

  /** Releases the variables (or the resident offloaded groups). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const v of Object.values(this.variables)) v.dispose();
    for (const g of [...this.cache.keys()]) this.release(g);
  }

  private assertLive(method: string): void {
    if (this.disposed)
      throw new SwitchyardError('STATE_INVALID', `${FN} was disposed; it cannot run ${method}()`);
  }

  /** W_i for all experts on the tape: gathered bases plus U V^T (padded compute). */
  private materializedOnTape(): ExpertWeights {
    const v = this.variables;
    const groupOf = tf.tensor1d(Int32Array.from(this.grouping.groupOf), 'int32');
    const w = (m: MatrixName): Tensor3D =>
      tf.add(
        gatherRows(v[`${m}_shared`]!, groupOf),
        batchMatMul(v[`${m}_u`] as unknown as Tensor3D, v[`${m}_vt`] as unknown as Tensor3D),
      ) as Tensor3D;
    return {
      w1EDF: w('w1'),
      ...(this.activation === 'swiglu' ? { w3EDF: w('w3') } : {}),
      w2EFD: w('w2'),
    };
  }

  /** Whether expert matrices with `c` rows are materialised. */
  private materializes(c: number, I: number, O: number): boolean {
    if (this.materialize === 'auto') return c * (I + O) > I * O;
    return this.materialize === 'always';
  }

  /** The expert FFNs over their row blocks, reading factors from `src`; `keep` collects what a backward needs. */
  private expertsForward(
    xs: readonly tf.Tensor[],
    active: readonly number[],
    counts: Int32Array,
    src: FactorSource,
    keep: tf.Tensor[] | undefined,
  ): tf.Tensor[] {
    const groupOf = this.grouping.groupOf;
    const swiglu = this.activation === 'swiglu';
    // What the backward reads, per expert: per matrix (in this.matrices order) s, u, vt and t = x U
    // when factored, or W, u, vt, u when materialised (S_g is not needed then); then x, h1, a
    // (+ h3, sigmoid(h1), silu(h1) for SwiGLU).
    const saved = new Map<MatrixName, tf.Tensor[]>();
    const lin = (x: tf.Tensor, m: MatrixName, e: number, I: number, O: number): tf.Tensor => {
      const s = src.shared(m, groupOf[e]!);
      const u = src.u(m, e);
      const vt = src.vt(m, e);
      if (this.materializes(counts[e]!, I, O)) {
        // Temporaries die here; the backward of a materialised product needs W, not S_g.
        const [w, out] = tf.tidy(() => {
          const wIO = tf.add(s, tf.matMul(u, vt));
          return [wIO, tf.matMul(x, wIO)];
        });
        if (src.owned) s.dispose();
        saved.set(m, [w!, u, vt, u]); // a saved tensor is copied: W once, the small u in the spare slot
        return out!;
      }
      const t = tf.matMul(x, u); // [c, R]
      saved.set(m, [s, u, vt, t]);
      return tf.tidy(() => tf.add(tf.matMul(x, s), tf.matMul(t, vt)));
    };
    const [D, F] = [this.dModel, this.dFF];
    return active.map((e, i) => {
      const x = xs[i]!;
      const h1 = lin(x, 'w1', e, D, F);
      let a: tf.Tensor;
      let acts: tf.Tensor[];
      if (swiglu) {
        const h3 = lin(x, 'w3', e, D, F);
        const sg = tf.sigmoid(h1);
        const g = tf.mul(h1, sg); // silu(h1)
        a = tf.mul(g, h3);
        acts = [x, h1, a, h3, sg, g];
      } else {
        a = this.activation === 'gelu' ? gelu(h1) : tf.relu(h1);
        acts = [x, h1, a];
      }
      const y = lin(a, 'w2', e, F, D);
      if (keep) {
        for (const [m] of this.matrices) keep.push(...saved.get(m)!);
        keep.push(...acts);
      }
      return y;
    });
  }

  /** Dropless compute from the variables, with one custom gradient for the whole batch. */
  private droplessResident(xSD: Tensor2D, d: DispatchPlan, active: readonly number[]): Tensor2D {
    const { numExperts: E, rank: R } = this;
    const G = this.grouping.numGroups;
    const groupOf = this.grouping.groupOf;
    const counts = d.countsE;
    const sizes = active.map((e) => counts[e]!);
    const mats = this.matrices;
    const nm = mats.length;
    const swiglu = this.activation === 'swiglu';
    const perExpert = 4 * nm + (swiglu ? 6 : 3);
    const v = this.variables;
    const inputs: tf.Tensor[] = [xSD];
    for (const [m] of mats) inputs.push(v[`${m}_shared`]!, v[`${m}_u`]!, v[`${m}_vt`]!);

    const forward = (...args: [...inputs: tf.Tensor[], save: GradSave]) => {
      const save = args[args.length - 1] as GradSave;
      const x = args[0] as tf.Tensor;
      const stacked = new Map<string, tf.Tensor>();
      mats.forEach(([m], j) => {
        stacked.set(`${m}_shared`, args[1 + 3 * j] as tf.Tensor);
        stacked.set(`${m}_u`, args[2 + 3 * j] as tf.Tensor);
        stacked.set(`${m}_vt`, args[3 + 3 * j] as tf.Tensor);
      });
      const slice = (name: string, idx: number): tf.Tensor => {
        const t = stacked.get(name)!;
        return copyRows(t, idx, 1, t.shape.slice(1));
      };
      const src: FactorSource = {
        owned: true,
        shared: (m, g) => slice(`${m}_shared`, g),
        u: (m, e) => slice(`${m}_u`, e),
        vt: (m, e) => slice(`${m}_vt`, e),
      };
      const keep: tf.Tensor[] = [];
      const ys = this.expertsForward(splitRowsRaw(x, sizes), active, counts, src, keep);
      save(keep);
      return {
        value: ys.length === 1 ? ys[0]! : tf.concat(ys, 0),
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => backward(dy, saved),
      };
    };

    const backward = (dySD: tf.Tensor, saved: tf.Tensor[]): tf.Tensor[] => {
      const dys = splitRowsRaw(dySD, sizes);
      const dxs: tf.Tensor[] = [];
      const dShared = new Map<MatrixName, Map<number, tf.Tensor>>(mats.map(([m]) => [m, new Map()]));
      const dU = new Map<MatrixName, Map<number, tf.Tensor>>(mats.map(([m]) => [m, new Map()]));
      const dVt = new Map<MatrixName, Map<number, tf.Tensor>>(mats.map(([m]) => [m, new Map()]));
      const addShared = (m: MatrixName, g: number, t: tf.Tensor) => {
        const prev = dShared.get(m)!.get(g);
        dShared.get(m)!.set(g, prev ? tf.add(prev, t) : t);
      };
      /** Backward of `out = x W` with W factored or materialised; returns dx. */
      const linBack = (
        m: MatrixName,
        e: number,
        x: tf.Tensor,
        dOut: tf.Tensor,
        at: number,
        I: number,
        O: number,
      ) => {
        const [s, u, vt, extra] = saved.slice(at, at + 4) as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
        const g = groupOf[e]!;
        if (this.materializes(counts[e]!, I, O)) {
          const w = s; // materialised: the first slot holds W
          const dW = mulAT(x, dOut); // [I, O]
          addShared(m, g, dW);
          dU.get(m)!.set(e, mulBT(dW, vt)); // [I, R]
          dVt.get(m)!.set(e, mulAT(u, dW)); // [R, O]
          return mulBT(dOut, w); // dOut W^T
        }
        addShared(m, g, mulAT(x, dOut));
        dVt.get(m)!.set(e, mulAT(extra, dOut)); // t^T dOut: [R, O]
        const dt = mulBT(dOut, vt); // [c, R]
        dU.get(m)!.set(e, mulAT(x, dt)); // [I, R]
        return tf.add(mulBT(dOut, s), mulBT(dt, u));
      };
      const [D, F] = [this.dModel, this.dFF];
      const offsetOf = (m: MatrixName) => 4 * mats.findIndex(([n]) => n === m);
      active.forEach((e, i) => {
        const base = i * perExpert;
        const acts = base + 4 * nm;
        const [x, h1, a] = saved.slice(acts, acts + 3) as [tf.Tensor, tf.Tensor, tf.Tensor];
        const da = linBack('w2', e, a, dys[i]!, base + offsetOf('w2'), F, D);
        if (swiglu) {
          const [h3, sg, g] = saved.slice(acts + 3, acts + 6) as [tf.Tensor, tf.Tensor, tf.Tensor];
          const dh3 = tf.mul(da, g);
          // d silu(h)/dh = s (1 + h (1 - s))
          const dh1 = tf.mul(tf.mul(da, h3), tf.mul(sg, tf.add(1, tf.mul(h1, tf.sub(1, sg)))));
          dxs.push(
            tf.add(
              linBack('w1', e, x, dh1, base + offsetOf('w1'), D, F),
              linBack('w3', e, x, dh3, base + offsetOf('w3'), D, F),
            ),
          );
        } else {
          let dh1: tf.Tensor;
          if (this.activation === 'gelu') {
            const cdf = tf.mul(0.5, tf.add(1, tf.erf(tf.mul(h1, INV_SQRT_2))));
            const pdf = tf.mul(INV_SQRT_2PI, tf.exp(tf.mul(-0.5, tf.square(h1))));
            dh1 = tf.mul(da, tf.add(cdf, tf.mul(h1, pdf)));
          } else dh1 = tf.mul(da, tf.step(h1));
          dxs.push(linBack('w1', e, x, dh1, base + offsetOf('w1'), D, F));
        }
      });
      const grads: tf.Tensor[] = [dxs.length === 1 ? dxs[0]! : tf.concat(dxs, 0)];
      for (const [m, I, O] of mats) {
        grads.push(stackExperts(dShared.get(m)!, G, [I, O]));
        grads.push(stackExperts(dU.get(m)!, E, [I, R]));
        grads.push(stackExperts(dVt.get(m)!, E, [R, O]));
      }
      return grads;
    };

    const f = customGrad(forward);
    return f(...inputs) as Tensor2D;
  }

  /** Dropless compute from the resident offloaded groups (inference: on the tape, no weight gradients). */
  private droplessOffloaded(xSD: Tensor2D, d: DispatchPlan, active: readonly number[]): Tensor2D {
    const groupOf = this.grouping.groupOf;
    const tensorsOf = (m: MatrixName, e: number) => this.cache.get(groupOf[e]!)!.get(m)!;
    const src: FactorSource = {
      owned: false,
      shared: (m, g) => this.cache.get(g)!.get(m)!.shared,
      u: (m, e) => tensorsOf(m, e).u.get(e)!,
      vt: (m, e) => tensorsOf(m, e).vt.get(e)!,
    };
    const sizes = active.map((e) => d.countsE[e]!);
    const ys = this.expertsForward(splitRowsRaw(xSD, sizes), active, d.countsE, src, undefined);
    return (ys.length === 1 ? ys[0]! : tf.concat(ys, 0)) as Tensor2D;
  }

  /** Offload: makes `groups` resident (loading the missing ones) and marks them most recently used. */
  private loadGroups(groups: readonly number[]): void {
    const host = this.host!;
    const R = this.rank;
    for (const g of groups) {
      const hit = this.cache.get(g);
      if (hit) {
        this.cache.delete(g);
        this.cache.set(g, hit);
        continue;
      }
      const members = this.grouping.groups[g]!;
      const byMatrix = new Map<MatrixName, GroupTensors>();
      for (const [m, I, O] of this.matrices) {
        const f = host.matrices[m]!;
        const keep = <T extends tf.Tensor>(t: T): T => tf.keep(t);
        byMatrix.set(m, {
          shared: keep(tf.tensor2d(f.sharedGIO.subarray(g * I * O, (g + 1) * I * O), [I, O])),
          u: new Map(
            members.map((e) => [e, keep(tf.tensor2d(f.uEIR.subarray(e * I * R, (e + 1) * I * R), [I, R]))]),
          ),
          vt: new Map(
            members.map((e) => [e, keep(tf.tensor2d(f.vtERO.subarray(e * R * O, (e + 1) * R * O), [R, O]))]),
          ),
        });
      }
      this.cache.set(g, byMatrix);
      this.loads++;
    }
  }

  /** Offload: evicts least recently used groups until at most `residentGroups` stay. */
  private evictDown(): void {
    while (this.cache.size > this.residentGroups!) {
      const lru = this.cache.keys().next().value as number;
      this.release(lru);
      this.evictions++;
    }
  }

  private release(g: number): void {
    const byMatrix = this.cache.get(g);
    if (!byMatrix) return;
    for (const t of byMatrix.values()) tf.dispose([t.shared, ...t.u.values(), ...t.vt.values()]);
    this.cache.delete(g);
  }
}
