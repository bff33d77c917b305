// Gathers and scatters of rows: GatherV2 along one axis and UnsortedSegmentSum over the leading axes.
// Element size is 4 bytes (f32 and i32 alike); indices are i32.

import { addRow, copyRun } from './copy';

/** Position of the first index outside [0, dim), or -1 when all are in range. */
export function firstIndexOutOfRange(indices: usize, n: i32, dim: i32): i32 {
  for (let i = 0; i < n; i++) {
    if (<u32>load<i32>(indices + ((<usize>i) << 2)) >= <u32>dim) return i;
  }
  return -1;
}

/**
 * out[o][i][s] = x[o][indices[i]][s] for `outer` blocks of x viewed as [outer, dim, slice] (every
 * index already checked to be in [0, dim)).
 */
export function gather(x: usize, indices: usize, out: usize, outer: i32, dim: i32, n: i32, slice: i32): void {
  const row = (<usize>slice) << 2;
  const block = <usize>dim * row;
  if (slice === 1) {
    for (let o = 0; o < outer; o++) {
      const xb = x + <usize>o * block;
      const ob = out + <usize>o * <usize>n * 4;
      for (let i = 0; i < n; i++) {
        const k = <usize>load<i32>(indices + ((<usize>i) << 2));
        store<u32>(ob + ((<usize>i) << 2), load<u32>(xb + (k << 2)));
      }
    }
    return;
  }
  for (let o = 0; o < outer; o++) {
    const xb = x + <usize>o * block;
    const ob = out + <usize>o * <usize>n * row;
    for (let i = 0; i < n; i++) {
      const k = <usize>load<i32>(indices + ((<usize>i) << 2));
      copyRun(ob + <usize>i * row, xb + k * row, row);
    }
  }
}

/**
 * out[s] = sum of x[i] over the rows i with ids[i] == s, rows of `inner` elements, in order of i;
 * ids outside [0, segments) are dropped. `out` holds `segments` rows and is overwritten.
 */
export function segmentSumF32(x: usize, ids: usize, out: usize, n: i32, inner: i32, segments: i32): void {
  segmentSum<f32>(x, ids, out, n, inner, segments);
}

/** {@link segmentSumF32} for i32 (wrapping sums). */
export function segmentSumI32(x: usize, ids: usize, out: usize, n: i32, inner: i32, segments: i32): void {
  segmentSum<i32>(x, ids, out, n, inner, segments);
}

function segmentSum<T>(x: usize, ids: usize, out: usize, n: i32, inner: i32, segments: i32): void {
  const row = (<usize>inner) << 2;
  memory.fill(out, 0, <usize>segments * row);
  for (let i = 0; i < n; i++) {
    const s = load<i32>(ids + ((<usize>i) << 2));
    if (<u32>s >= <u32>segments) continue;
    addRow<T>(out + <usize>s * row, x + <usize>i * row, row);
  }
}

/**
 * A strided block copy: out (contiguous) = x viewed as [d0, d1, d2] with strides (s0, s1, 1), runs
 * of d2 elements. Covers Slice after merging axes (begin folded into x).
 */
export function copyBlocks(x: usize, out: usize, d0: i32, d1: i32, d2: i32, s0: i32, s1: i32): void {
  const run = (<usize>d2) << 2;
  let o = out;
  for (let a = 0; a < d0; a++) {
    const xa = x + ((<usize>a * <usize>s0) << 2);
    for (let b = 0; b < d1; b++) {
      copyRun(o, xa + ((<usize>b * <usize>s1) << 2), run);
      o += run;
    }
  }
}
