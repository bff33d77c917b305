/**
 * Seeded, splittable random numbers for every random choice in Switchyard (init, jitter, routing
 * noise, dropout, data order). The generator is xoshiro128** seeded through splitmix32; child
 * streams come from {@link Rng.split} (advances the parent) or {@link Rng.fork} (derives a named
 * stream without advancing it). Tensors are filled on the host, so the same seed gives the same
 * values on every backend.
 */
import * as tf from '@tensorflow/tfjs';
import { invalidArgument } from './errors';
import { checkInt, checkNumber } from './validate';

/** Serialisable generator state (for checkpoints). */
export interface RngState {
  readonly algorithm: 'xoshiro128**';
  readonly s: readonly [number, number, number, number];
}

function splitmix32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x9e3779b9) >>> 0;
    let z = a;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** FNV-1a over a string, mixed with a number: maps (state, key) to a 32-bit seed. */
function hashKey(key: string | number, salt: number): number {
  let h = (0x811c9dc5 ^ salt) >>> 0;
  const s = typeof key === 'number' ? `#${key}` : key;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function seedFrom(seed: number | string): number {
  if (typeof seed === 'string') return hashKey(seed, 0x5eed);
  if (!Number.isFinite(seed) || !Number.isInteger(seed))
    throw invalidArgument('Rng', 'seed', 'an integer or a string', seed);
  // Fold the high bits of large integers in, so seeds differing only above 2^32 differ.
  const hi = Math.floor(seed / 0x100000000);
  return ((seed >>> 0) ^ Math.imul(hi >>> 0, 0x9e3779b1)) >>> 0;
}

/**
 * A seeded random generator.
 *
 * When to use: everywhere randomness is needed; take a child per purpose with `fork('init')`.
 *
 * @example
 * ```ts
 * const rng = new Rng(42);
 * const w = rng.normalTensor([4, 4], 0, 0.02);
 * const order = rng.fork('data').permutation(10);
 * ```
 */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spareNormal: number | undefined;

  constructor(seed: number | string = 0) {
    const sm = splitmix32(seedFrom(seed));
    this.s0 = sm();
    this.s1 = sm();
    this.s2 = sm();
    this.s3 = sm();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Restores a generator from {@link Rng.getState}. */
  static fromState(state: RngState): Rng {
    if (state?.algorithm !== 'xoshiro128**' || !Array.isArray(state.s) || state.s.length !== 4) {
      throw invalidArgument('Rng.fromState', 'state', 'an RngState from Rng.getState()', state);
    }
    const r = new Rng(0);
    [r.s0, r.s1, r.s2, r.s3] = state.s.map((v) => v >>> 0) as [number, number, number, number];
    return r;
  }

  /** The generator's state, to save in a checkpoint. */
  getState(): RngState {
    return { algorithm: 'xoshiro128**', s: [this.s0, this.s1, this.s2, this.s3] };
  }

  /** Next uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    this.s0 >>>= 0;
    this.s1 >>>= 0;
    this.s2 >>>= 0;
    this.s3 >>>= 0;
    return result;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  float(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform float in [lo, hi). */
  uniform(lo = 0, hi = 1): number {
    return lo + (hi - lo) * this.float();
  }

  /** Uniform integer in [0, n), without modulo bias. */
  int(n: number): number {
    checkInt('Rng.int', 'n', n, { min: 1, max: 0x100000000 });
    const limit = 0x100000000 - (0x100000000 % n);
    let x = this.nextUint32();
    while (x >= limit) x = this.nextUint32();
    return x % n;
  }

  /** Standard normal sample (Box-Muller). */
  normal(mean = 0, std = 1): number {
    if (this.spareNormal !== undefined) {
      const z = this.spareNormal;
      this.spareNormal = undefined;
      return mean + std * z;
    }
    let u = 0;
    while (u === 0) u = this.float();
    const v = this.float();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = r * Math.sin(2 * Math.PI * v);
    return mean + std * r * Math.cos(2 * Math.PI * v);
  }

  /** Normal sample truncated to [mean - bound*std, mean + bound*std] by resampling. */
  truncatedNormal(mean = 0, std = 1, bound = 2): number {
    for (;;) {
      const z = this.normal();
      if (Math.abs(z) <= bound) return mean + std * z;
    }
  }

  /** A uniformly random permutation of 0..n-1 (Fisher-Yates). */
  permutation(n: number): Int32Array {
    checkInt('Rng.permutation', 'n', n, { min: 0 });
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    this.shuffle(p);
    return p;
  }

  /** Shuffles an array in place and returns it. */
  shuffle<A extends { length: number; [i: number]: unknown }>(a: A): A {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = a[i];
      a[i] = a[j];
      a[j] = t;
    }
    return a;
  }

  /** A new independent generator; advances this one. */
  split(): Rng {
    return new Rng(this.nextUint32() * 0x100000 + (this.nextUint32() >>> 12));
  }

  /**
   * A generator derived from this one's current state and `key`, without advancing this one.
   * The same state and key always give the same stream; different keys give independent streams.
   */
  fork(key: string | number): Rng {
    const r = new Rng(0);
    const sm = splitmix32(hashKey(key, this.s0 ^ rotl(this.s1, 7) ^ rotl(this.s2, 13) ^ rotl(this.s3, 19)));
    r.s0 = sm();
    r.s1 = sm();
    r.s2 = sm();
    r.s3 = sm();
    return r;
  }

  /** Float32 tensor of uniform samples in [lo, hi). */
  uniformTensor(shape: readonly number[], lo = 0, hi = 1): tf.Tensor {
    checkNumber('Rng.uniformTensor', 'lo', lo);
    checkNumber('Rng.uniformTensor', 'hi', hi);
    const out = new Float32Array(size(shape));
    for (let i = 0; i < out.length; i++) out[i] = lo + (hi - lo) * this.float();
    return tf.tensor(out, shape as number[], 'float32');
  }

  /** Float32 tensor of normal samples. */
  normalTensor(shape: readonly number[], mean = 0, std = 1): tf.Tensor {
    const out = new Float32Array(size(shape));
    for (let i = 0; i < out.length; i++) out[i] = this.normal(mean, std);
    return tf.tensor(out, shape as number[], 'float32');
  }

  /** Float32 tensor of normal samples truncated at `bound` standard deviations. */
  truncatedNormalTensor(shape: readonly number[], mean = 0, std = 1, bound = 2): tf.Tensor {
    const out = new Float32Array(size(shape));
    for (let i = 0; i < out.length; i++) out[i] = this.truncatedNormal(mean, std, bound);
    return tf.tensor(out, shape as number[], 'float32');
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

function size(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0)
      throw invalidArgument('Rng', 'shape', 'non-negative integer dims', shape);
    n *= d;
  }
  return n;
}
