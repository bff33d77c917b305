/**
 * Host-side selection kernels: scores from logits, top-k per row, group-limited masks, random
 * K-subsets. All integer decisions are made here, on typed arrays read from the device once.
 *
 * Shape letters: T tokens, E experts (columns), K slots, G groups. Arrays are row-major.
 */
import type { Rng } from '@switchyard/tensor';

/** Row-wise softmax of a [T, E] array, in float64. */
export function hostSoftmax(logits: ArrayLike<number>, T: number, E: number): Float64Array {
  const out = new Float64Array(T * E);
  for (let t = 0; t < T; t++) {
    const o = t * E;
    let m = Number.NEGATIVE_INFINITY;
    for (let e = 0; e < E; e++) m = Math.max(m, logits[o + e]!);
    let s = 0;
    for (let e = 0; e < E; e++) {
      const v = Math.exp(logits[o + e]! - m);
      out[o + e] = v;
      s += v;
    }
    for (let e = 0; e < E; e++) out[o + e]! /= s;
  }
  return out;
}

/** Index of the first non-finite value, or -1. */
export function firstNonFinite(a: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return i;
  return -1;
}

/**
 * Top-k of each row of `scores` [T, E] into `out` [T, K] (descending; ties to the lower index).
 * Columns with `allowed[t*E+e] === 0` are skipped; each row must allow at least K columns.
 */
export function hostTopK(
  scores: ArrayLike<number>,
  T: number,
  E: number,
  K: number,
  allowed?: Uint8Array,
): Int32Array {
  const out = new Int32Array(T * K);
  const bestV = new Float64Array(K);
  const bestI = new Int32Array(K);
  for (let t = 0; t < T; t++) {
    const o = t * E;
    let filled = 0;
    for (let e = 0; e < E; e++) {
      if (allowed !== undefined && !allowed[o + e]) continue;
      const v = scores[o + e]!;
      if (filled === K && !(v > bestV[K - 1]!)) continue;
      // Insert after every value >= v (earlier, equal values stay ahead).
      let pos = filled === K ? K - 1 : filled;
      while (pos > 0 && v > bestV[pos - 1]!) {
        bestV[pos] = bestV[pos - 1]!;
        bestI[pos] = bestI[pos - 1]!;
        pos--;
      }
      bestV[pos] = v;
      bestI[pos] = e;
      if (filled < K) filled++;
    }
    for (let j = 0; j < K; j++) out[t * K + j] = bestI[j]!;
  }
  return out;
}

/**
 * Group-limited mask [T, E]: per token, a group's score is the sum of its top-2 scores (top-1 when
 * groups hold one expert); the `groupTopK` best groups (ties to the lower group) stay allowed.
 */
export function groupLimitedMask(
  scores: ArrayLike<number>,
  T: number,
  E: number,
  numGroups: number,
  groupTopK: number,
): Uint8Array {
  const per = E / numGroups;
  const groupScoresTG = new Float64Array(T * numGroups);
  for (let t = 0; t < T; t++) {
    for (let g = 0; g < numGroups; g++) {
      let a = Number.NEGATIVE_INFINITY;
      let b = Number.NEGATIVE_INFINITY;
      const o = t * E + g * per;
      for (let i = 0; i < per; i++) {
        const v = scores[o + i]!;
        if (v > a) {
          b = a;
          a = v;
        } else if (v > b) {
          b = v;
        }
      }
      groupScoresTG[t * numGroups + g] = per > 1 ? a + b : a;
    }
  }
  const keptTG = hostTopK(groupScoresTG, T, numGroups, groupTopK);
  const mask = new Uint8Array(T * E);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < groupTopK; j++) {
      const g = keptTG[t * groupTopK + j]!;
      mask.fill(1, t * E + g * per, t * E + (g + 1) * per);
    }
  }
  return mask;
}

/** I.i.d. uniform scores [n]: top-K of them is a uniformly random K-subset (random-routing warm-up). */
export function randomScores(n: number, rng: Rng): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.float();
  return out;
}

/** Adds a per-column bias [E] to scores [T, E] (selection only); returns a new array. */
export function addColumnBias(
  scores: ArrayLike<number>,
  T: number,
  E: number,
  biasE: ArrayLike<number>,
): Float64Array {
  const out = new Float64Array(T * E);
  for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) out[t * E + e] = scores[t * E + e]! + biasE[e]!;
  return out;
}

/** Gathers `scores[t, idx[t, j]]` into [T, K]. */
export function gatherHost(
  scores: ArrayLike<number>,
  idx: Int32Array,
  T: number,
  E: number,
  K: number,
): Float64Array {
  const out = new Float64Array(T * K);
  for (let t = 0; t < T; t++) for (let j = 0; j < K; j++) out[t * K + j] = scores[t * E + idx[t * K + j]!]!;
  return out;
}
