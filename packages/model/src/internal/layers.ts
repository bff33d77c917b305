/**
 * Transformer building blocks: parameter init, RMSNorm, rotary embeddings (Hugging Face's
 * rotate-half convention) and causal grouped-query self-attention with an optional KV cache.
 *
 * Shape letters: B batch, S new positions, P cached positions, T = P + S key positions,
 * D model width, H query heads, G key/value heads, R = H / G query heads per KV head, A head width,
 * X = H * A (all query heads), Y = G * A (all KV heads), N = B * G (sequence, KV head) pairs,
 * M = R * S query rows per pair, Q = B * H (sequence, query head) pairs.
 */
import { matMul, type Rng, softmax, tf } from '@switchyard/tensor';

/**
 * tf.tidy for results holding tensors among other values (routing plans carry host arrays, caches
 * are plain objects): the tensors in the result move to the caller's scope, every other tensor
 * created in `fn` is released.
 */
export function tidy<R>(fn: () => R): R {
  return tf.tidy(fn as () => tf.TensorContainer) as R;
}

/** A trainable variable initialised N(0, std) from `rng` (host-side, so every backend gets the same values). */
export function normalVariable(rng: Rng, shape: readonly number[], std: number): tf.Variable {
  const init = rng.normalTensor(shape, 0, std);
  const v = tf.variable(init, true);
  init.dispose();
  return v;
}

/** A trainable variable filled with `value`. */
export function constantVariable(shape: readonly number[], value: number): tf.Variable {
  const init = tf.fill(shape as number[], value);
  const v = tf.variable(init, true);
  init.dispose();
  return v;
}

/** RMSNorm as in Llama/Mixtral: w * x / sqrt(mean(x^2) + eps), statistics in float32. */
export class RMSNorm {
  readonly weightD: tf.Variable;
  constructor(
    readonly dModel: number,
    readonly eps: number,
  ) {
    this.weightD = constantVariable([dModel], 1);
  }
  forward(xTD: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const meanSqT1 = tf.mean(tf.square(xTD), -1, true);
      return tf.mul(tf.mul(xTD, tf.rsqrt(tf.add(meanSqT1, this.eps))), this.weightD) as tf.Tensor2D;
    });
  }
  dispose(): void {
    this.weightD.dispose();
  }
}

/**
 * Rotary position embedding tables, computed in float32 step by step as Hugging Face does:
 * inv_freq_i = 1 / theta^(2i / A), angle = position * inv_freq, emb = [angles, angles].
 */
export class RotaryEmbedding {
  /** inv_freq, A/2 values (float32-rounded). */
  readonly invFreq: Float32Array;
  private rotAA: tf.Tensor2D | undefined;

  constructor(
    readonly headDim: number,
    readonly theta: number,
  ) {
    const half = headDim / 2;
    this.invFreq = new Float32Array(half);
    for (let i = 0; i < half; i++) {
      const exponent = Math.fround((2 * i) / headDim);
      this.invFreq[i] = Math.fround(1 / Math.fround(theta ** exponent));
    }
  }

  /** cos and sin tables [S, A] for positions start .. start + S - 1. */
  tables(start: number, S: number): { cosSA: tf.Tensor2D; sinSA: tf.Tensor2D } {
    return this.tablesAt(Array.from({ length: S }, (_, s) => start + s));
  }

  /** cos and sin tables [S, A] for the given positions, one row each (a ragged batch's rows). */
  tablesAt(positions: readonly number[]): { cosSA: tf.Tensor2D; sinSA: tf.Tensor2D } {
    const A = this.headDim;
    const half = A / 2;
    const S = positions.length;
    const cos = new Float32Array(S * A);
    const sin = new Float32Array(S * A);
    for (let s = 0; s < S; s++) {
      const pos = positions[s]!;
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(pos * this.invFreq[i]!);
        const c = Math.cos(angle);
        const n = Math.sin(angle);
        cos[s * A + i] = c;
        cos[s * A + half + i] = c;
        sin[s * A + i] = n;
        sin[s * A + half + i] = n;
      }
    }
    return { cosSA: tf.tensor2d(cos, [S, A]), sinSA: tf.tensor2d(sin, [S, A]) };
  }

  /** The [A, A] matrix M with x @ M = rotate_half(x) = [-x2, x1]. Kept for the model's lifetime. */
  rotation(): tf.Tensor2D {
    if (!this.rotAA) {
      const A = this.headDim;
      const half = A / 2;
      const m = new Float32Array(A * A);
      for (let j = 0; j < half; j++) {
        m[(j + half) * A + j] = -1; // out[j] = -x[j + half]
        m[j * A + (j + half)] = 1; // out[j + half] = x[j]
      }
      this.rotAA = tf.keep(tf.tensor2d(m, [A, A]));
    }
    return this.rotAA;
  }

  /** Applies the rotation to x [B, S, N, A] (N heads) with tables [S, A]: x * cos + rotate_half(x) * sin. */
  apply(xBSNA: tf.Tensor4D, cosSA: tf.Tensor2D, sinSA: tf.Tensor2D): tf.Tensor4D {
    return tf.tidy(() => {
      const [B, S, N, A] = xBSNA.shape;
      const cos1S1A = cosSA.reshape([1, S, 1, A]);
      const sin1S1A = sinSA.reshape([1, S, 1, A]);
      const rotatedBSNA = matMul(xBSNA.reshape([B * S * N, A]), this.rotation()).reshape([B, S, N, A]);
      return tf.add(tf.mul(xBSNA, cos1S1A), tf.mul(rotatedBSNA, sin1S1A)) as tf.Tensor4D;
    });
  }

  dispose(): void {
    this.rotAA?.dispose();
    this.rotAA = undefined;
  }
}

/** Keys and values of the positions seen so far, one pair per attention layer: [B, G, P, A]. */
export interface LayerKV {
  readonly kBGPA: tf.Tensor4D;
  readonly vBGPA: tf.Tensor4D;
}

/** One sequence's part of a ragged batch: `rows` new positions after the cached ones in `past`. */
export interface RaggedSegment {
  readonly rows: number;
  readonly past: LayerKV | undefined;
}

/** Additive causal mask [S, T]: 0 where key position j <= query position P + i, else a large negative. */
export function causalMask(S: number, P: number): tf.Tensor2D {
  const T = P + S;
  const m = new Float32Array(S * T);
  for (let i = 0; i < S; i++) for (let j = P + i + 1; j < T; j++) m[i * T + j] = -1e9;
  return tf.tensor2d(m, [S, T]);
}

/** Causal multi-head self-attention with grouped key/value heads and rotary embeddings; no biases. */
export class CausalSelfAttention {
  readonly wqDX: tf.Variable;
  readonly wkDY: tf.Variable;
  readonly wvDY: tf.Variable;
  readonly woXD: tf.Variable;
  readonly headDim: number;

  constructor(
    readonly dModel: number,
    readonly numHeads: number,
    readonly numKvHeads: number,
    initStd: number,
    rng: Rng,
  ) {
    const A = dModel / numHeads;
    this.headDim = A;
    this.wqDX = normalVariable(rng.fork('q'), [dModel, numHeads * A], initStd);
    this.wkDY = normalVariable(rng.fork('k'), [dModel, numKvHeads * A], initStd);
    this.wvDY = normalVariable(rng.fork('v'), [dModel, numKvHeads * A], initStd);
    this.woXD = normalVariable(rng.fork('o'), [numHeads * A, dModel], initStd);
  }

  /**
   * Attends the B x S new positions (rows of xTD, row-major [B, S]) to the cached positions and to
   * themselves, causally. Returns the output [B*S, D] and the keys/values of all T positions.
   */
  forward(
    xTD: tf.Tensor2D,
    B: number,
    S: number,
    rope: RotaryEmbedding,
    cosSA: tf.Tensor2D,
    sinSA: tf.Tensor2D,
    maskST: tf.Tensor2D,
    past?: LayerKV,
  ): { yTD: tf.Tensor2D; kv: LayerKV } {
    return tf.tidy(() => {
      const { qBSHA, kBSGA, vBSGA } = this.project(xTD, B, S, rope, cosSA, sinSA);
      let kBGTA = tf.transpose(kBSGA, [0, 2, 1, 3]) as tf.Tensor4D;
      let vBGTA = tf.transpose(vBSGA, [0, 2, 1, 3]) as tf.Tensor4D;
      if (past) {
        kBGTA = tf.concat([past.kBGPA, kBGTA], 2);
        vBGTA = tf.concat([past.vBGPA, vBGTA], 2);
      }
      const outTX = this.attend(qBSHA, kBGTA, vBGTA, maskST.expandDims(0) as tf.Tensor3D);
      const yTD = matMul(outTX, this.woXD) as tf.Tensor2D;
      return { yTD, kv: { kBGPA: kBGTA, vBGPA: vBGTA } };
    });
  }

  /**
   * Attention over a ragged batch: the rows of xTD are the sequences' new positions one sequence
   * after another (`segments[i].rows` rows each, after `segments[i].past` cached positions), with
   * `cosTA`/`sinTA` the RoPE tables of each row's own position. Projections run over all rows at
   * once; the single-position segments (decoding) attend together as one padded batch (keys past a
   * sequence's length masked out), the longer ones (prefill chunks) one at a time. Returns the
   * output [T, D] in row order and each segment's keys/values of all its positions.
   */
  forwardRagged(
    xTD: tf.Tensor2D,
    segments: readonly RaggedSegment[],
    rope: RotaryEmbedding,
    cosTA: tf.Tensor2D,
    sinTA: tf.Tensor2D,
  ): { yTD: tf.Tensor2D; kvs: LayerKV[] } {
    const run = (): { yTD: tf.Tensor2D; kvs: LayerKV[] } => {
      const T = xTD.shape[0];
      const { qBSHA, kBSGA, vBSGA } = this.project(xTD, 1, T, rope, cosTA, sinTA);
      const sizes = segments.map((g) => g.rows);
      const split = (t: tf.Tensor, inner: number[]) => {
        const rows = t.reshape([T, ...inner]);
        return segments.length === 1 ? [rows] : tf.split(rows, sizes, 0);
      };
      const qs = split(qBSHA, [this.numHeads, this.headDim]); // each [S_i, H, A]
      const ks = split(kBSGA, [this.numKvHeads, this.headDim]); // each [S_i, G, A]
      const vs = split(vBSGA, [this.numKvHeads, this.headDim]);
      const kvs: LayerKV[] = segments.map((g, i) => {
        // [S_i, G, A] -> [1, G, S_i, A], after the cached positions.
        const kNew = tf.transpose(ks[i]!.expandDims(0), [0, 2, 1, 3]) as tf.Tensor4D;
        const vNew = tf.transpose(vs[i]!.expandDims(0), [0, 2, 1, 3]) as tf.Tensor4D;
        return g.past
          ? { kBGPA: tf.concat([g.past.kBGPA, kNew], 2), vBGPA: tf.concat([g.past.vBGPA, vNew], 2) }
          : { kBGPA: kNew, vBGPA: vNew };
      });
      const decode = segments.flatMap((g, i) => (g.rows === 1 ? [i] : []));
      const prefill = segments.flatMap((g, i) => (g.rows === 1 ? [] : [i]));
      const pieces: tf.Tensor2D[] = [];
      if (decode.length > 0) pieces.push(this.attendDecoding(decode, qs, kvs));
      for (const i of prefill) {
        const S = sizes[i]!;
        const P = kvs[i]!.kBGPA.shape[2] - S;
        const maskST = causalMask(S, P);
        const qBSHA = qs[i]!.expandDims(0) as tf.Tensor4D;
        pieces.push(this.attend(qBSHA, kvs[i]!.kBGPA, kvs[i]!.vBGPA, maskST.expandDims(0) as tf.Tensor3D));
      }
      let outTX = pieces.length === 1 ? pieces[0]! : (tf.concat(pieces, 0) as tf.Tensor2D);
      // Pieces hold the decoding rows first; put every row back in segment order.
      const order = [...decode, ...prefill];
      if (order.some((seg, j) => seg !== j)) {
        const starts: number[] = [];
        let at = 0;
        for (const seg of order) {
          starts[seg] = at;
          at += sizes[seg]!;
        }
        const rowsT = segments.flatMap((g, i) => Array.from({ length: g.rows }, (_, r) => starts[i]! + r));
        outTX = tf.gather(outTX, tf.tensor1d(rowsT, 'int32')) as tf.Tensor2D;
      }
      const yTD = matMul(outTX, this.woXD) as tf.Tensor2D;
      return { yTD, kvs };
    };
    return tidy(run);
  }

  /** Queries and keys with rotary embeddings, and values, of B x S rows: [B, S, heads, A]. */
  private project(
    xTD: tf.Tensor2D,
    B: number,
    S: number,
    rope: RotaryEmbedding,
    cosSA: tf.Tensor2D,
    sinSA: tf.Tensor2D,
  ): { qBSHA: tf.Tensor4D; kBSGA: tf.Tensor4D; vBSGA: tf.Tensor4D } {
    const H = this.numHeads;
    const G = this.numKvHeads;
    const A = this.headDim;
    return {
      qBSHA: rope.apply(matMul(xTD, this.wqDX).reshape([B, S, H, A]), cosSA, sinSA),
      kBSGA: rope.apply(matMul(xTD, this.wkDY).reshape([B, S, G, A]), cosSA, sinSA),
      vBSGA: matMul(xTD, this.wvDY).reshape([B, S, G, A]) as tf.Tensor4D,
    };
  }

  /**
   * The single-position segments `decode` attending together: their keys/values padded with zeros
   * to the longest, positions past each sequence's own length masked. Output rows [B, X] in `decode` order.
   */
  private attendDecoding(decode: readonly number[], qs: tf.Tensor[], kvs: readonly LayerKV[]): tf.Tensor2D {
    const lengths = decode.map((i) => kvs[i]!.kBGPA.shape[2]);
    const Tmax = Math.max(...lengths);
    const pad = (t: tf.Tensor4D) =>
      t.shape[2] === Tmax
        ? t
        : tf.pad(t, [
            [0, 0],
            [0, 0],
            [0, Tmax - t.shape[2]],
            [0, 0],
          ]);
    const stack = (ts: tf.Tensor4D[]) => (ts.length === 1 ? ts[0]! : (tf.concat(ts, 0) as tf.Tensor4D));
    const kBGTA = stack(decode.map((i) => pad(kvs[i]!.kBGPA)));
    const vBGTA = stack(decode.map((i) => pad(kvs[i]!.vBGPA)));
    const B = decode.length;
    const mask = new Float32Array(B * Tmax);
    lengths.forEach((len, b) => {
      mask.fill(-1e9, b * Tmax + len, (b + 1) * Tmax);
    });
    const qB1HA = (
      B === 1
        ? qs[decode[0]!]!
        : tf.concat(
            decode.map((i) => qs[i]!),
            0,
          )
    ).reshape([B, 1, this.numHeads, this.headDim]) as tf.Tensor4D;
    return this.attend(qB1HA, kBGTA, vBGTA, tf.tensor3d(mask, [B, 1, Tmax]));
  }

  /**
   * Scaled dot-product attention of queries [B, S, H, A] over keys and values [B, G, T, A] with an
   * additive mask [B or 1, S, T]; returns the heads concatenated per row, [B * S, X].
   */
  private attend(
    qBSHA: tf.Tensor4D,
    kBGTA: tf.Tensor4D,
    vBGTA: tf.Tensor4D,
    maskMST: tf.Tensor3D,
  ): tf.Tensor2D {
    const [B, S, H, A] = qBSHA.shape;
    const G = this.numKvHeads;
    const R = H / G;
    const T = kBGTA.shape[2];
    // Query heads g*R .. g*R+R-1 share KV head g: [B, H, S, A] = [B, G, R, S, A] -> [N, M, A].
    const qNMA = tf.transpose(qBSHA, [0, 2, 1, 3]).reshape([B * G, R * S, A]) as tf.Tensor3D;
    const kNTA = kBGTA.reshape([B * G, T, A]) as tf.Tensor3D;
    const vNTA = vBGTA.reshape([B * G, T, A]) as tf.Tensor3D;
    // Scores [N, M, T] -> [B, G * R, S, T] so the mask [B|1, 1, S, T] broadcasts over the heads.
    const scoresBQST = tf.add(
      tf.mul(matMul(qNMA, kNTA, false, true), 1 / Math.sqrt(A)).reshape([B, G * R, S, T]),
      maskMST.expandDims(1),
    );
    const probsNMT = softmax(scoresBQST).reshape([B * G, R * S, T]);
    const outBHSA = matMul(probsNMT, vNTA).reshape([B, H, S, A]);
    return tf.transpose(outBHSA, [0, 2, 1, 3]).reshape([B * S, H * A]) as tf.Tensor2D;
  }

  variables(): tf.Variable[] {
    return [this.wqDX, this.wkDY, this.wvDY, this.woXD];
  }

  dispose(): void {
    for (const v of this.variables()) v.dispose();
  }
}
