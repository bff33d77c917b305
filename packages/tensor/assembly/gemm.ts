// f32 matrix products with wasm SIMD (f32x4, no FMA), and grouped products over contiguous row
// segments (one product per expert, all in one call).
//
//   C[m][n] (+)= sum_k A(m, k) B(k, n)
//
// A and B are read through byte strides, so a transposed operand costs nothing extra: A(m, k) is at
// a + m * aRow + k * aCol and B(k, n) at b + k * bRow + n * bCol. C is row-major with `ldc` floats
// per row. B is packed, block by block (KC x NC), into caller-provided scratch as panels of NR
// columns (zero-padded), each panel KC rows of NR contiguous floats; A is read in place when its rows
// are contiguous, else MR rows at a time are copied to MR floats per k. A register-blocked MR x NR
// microkernel then multiplies MR rows of A against one panel: per k, one splat-load of A per row
// against the panel's two f32x4 halves, into MR x 2 f32x4 accumulators (the "loadsplat" scheme of
// XNNPACK's wasmsimd kernels).

import { transpose4x4 } from './simd';

const MR: i32 = 4;
const NR: i32 = 8;
const KC: i32 = 256;
const NC: i32 = 256; // multiple of NR

/** Floats of scratch every product below needs (one packed KC x NC block of B, one KC x MR strip of A). */
export function gemmScratchFloats(): i32 {
  return KC * NC + KC * MR;
}

/**
 * C (+)= A B for one product. `accumulate` adds to C instead of overwriting it; with K = 0 and no
 * accumulate, C is zeroed (the empty sum).
 */
export function gemm(
  a: usize,
  aRow: usize,
  aCol: usize,
  b: usize,
  bRow: usize,
  bCol: usize,
  c: usize,
  ldc: i32,
  M: i32,
  N: i32,
  K: i32,
  accumulate: bool,
  scratch: usize,
): void {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) zeroRows(c, ldc, M, N);
    return;
  }
  for (let n0 = 0; n0 < N; n0 += NC) {
    const nc = min(NC, N - n0);
    for (let k0 = 0; k0 < K; k0 += KC) {
      const kc = min(KC, K - k0);
      packB(b + <usize>k0 * bRow + <usize>n0 * bCol, bRow, bCol, kc, nc, scratch);
      const acc = accumulate || k0 > 0;
      const aBlock = a + <usize>k0 * aCol;
      const stripA = scratch + <usize>(KC * NC) * 4;
      for (let m0 = 0; m0 < M; m0 += MR) {
        const mr = min(MR, M - m0);
        let a0 = aBlock + <usize>m0 * aRow;
        let a1 = mr > 1 ? a0 + aRow : a0;
        let a2 = mr > 2 ? a0 + 2 * aRow : a0;
        let a3 = mr > 3 ? a0 + 3 * aRow : a0;
        let aStep = aCol;
        if (aCol !== 4) {
          // A read down its columns (given transposed): successive k are aCol bytes apart, which
          // in a power-of-two layout all land in a few cache sets. Copy the strip to MR contiguous
          // floats per k first, reused for every panel.
          packStripA(a0, aRow, aCol, mr, kc, stripA);
          a0 = stripA;
          a1 = stripA + 4;
          a2 = stripA + 8;
          a3 = stripA + 12;
          aStep = MR * 4;
        }
        const cRow = c + (<usize>m0 * <usize>ldc + <usize>n0) * 4;
        for (let j = 0; j < nc; j += NR) {
          const panel = scratch + <usize>j * <usize>kc * 4;
          micro(
            a0,
            a1,
            a2,
            a3,
            aStep,
            panel,
            kc,
            cRow + <usize>j * 4,
            <usize>ldc * 4,
            mr,
            min(NR, nc - j),
            acc,
          );
        }
      }
    }
  }
}

/**
 * Grouped C = A B over contiguous row segments: expert e owns the next `counts[e]` rows of A [S, K]
 * and C [S, N], and multiplies them by its own matrix of the stack B: [E, K, N], or [E, N, K] read
 * transposed when `transposeB`. `counts` points at E int32s.
 */
export function groupedGemm(
  a: usize,
  b: usize,
  c: usize,
  counts: usize,
  E: i32,
  K: i32,
  N: i32,
  transposeB: bool,
  accumulate: bool,
  scratch: usize,
): void {
  const matrix = <usize>K * <usize>N * 4;
  const bRow: usize = transposeB ? 4 : <usize>N * 4;
  const bCol: usize = transposeB ? <usize>K * 4 : 4;
  let row: usize = 0;
  for (let e = 0; e < E; e++) {
    const rows = load<i32>(counts + <usize>e * 4);
    if (rows > 0) {
      gemm(
        a + row * <usize>K * 4,
        <usize>K * 4,
        4,
        b + <usize>e * matrix,
        bRow,
        bCol,
        c + row * <usize>N * 4,
        N,
        rows,
        N,
        K,
        accumulate,
        scratch,
      );
    }
    row += <usize>max(rows, 0);
  }
}

/**
 * Grouped C_e = A_e^T G_e over contiguous row segments: A [S, M], G [S, N], C [E, M, N] (e.g. the
 * weight gradients of a grouped product). An expert with no rows gets zeros (or is left as it is
 * when `accumulate`).
 */
export function groupedGemmTN(
  a: usize,
  g: usize,
  c: usize,
  counts: usize,
  E: i32,
  M: i32,
  N: i32,
  accumulate: bool,
  scratch: usize,
): void {
  const matrix = <usize>M * <usize>N * 4;
  let row: usize = 0;
  for (let e = 0; e < E; e++) {
    const rows = max(load<i32>(counts + <usize>e * 4), 0);
    // A_e^T: element (m, k) of the [M, rows] operand is A[row + k][m].
    gemm(
      a + row * <usize>M * 4,
      4,
      <usize>M * 4,
      g + row * <usize>N * 4,
      <usize>N * 4,
      4,
      c + <usize>e * matrix,
      N,
      M,
      N,
      rows,
      accumulate,
      scratch,
    );
    row += <usize>rows;
  }
}

function zeroRows(c: usize, ldc: i32, M: i32, N: i32): void {
  for (let m = 0; m < M; m++) memory.fill(c + <usize>m * <usize>ldc * 4, 0, <usize>N * 4);
}

/** Copies rows m0..m0+mr of A over kc steps of k to MR floats per k (zeros past mr). */
function packStripA(a: usize, aRow: usize, aCol: usize, mr: i32, kc: i32, out: usize): void {
  if (mr === MR && aRow === 4) {
    for (let k = 0; k < kc; k++) v128.store(out + <usize>k * MR * 4, v128.load(a + <usize>k * aCol));
    return;
  }
  for (let k = 0; k < kc; k++) {
    for (let i = 0; i < MR; i++) {
      store<f32>(
        out + (<usize>k * MR + <usize>i) * 4,
        i < mr ? load<f32>(a + <usize>i * aRow + <usize>k * aCol) : 0,
      );
    }
  }
}

/** Packs B's kc x nc block into panels of NR columns, KC-major within a panel, zero-padding the last. */
function packB(b: usize, bRow: usize, bCol: usize, kc: i32, nc: i32, out: usize): void {
  const full = nc & ~(NR - 1);
  if (bCol === 4) {
    // Rows of B are contiguous: each panel row is two f32x4 loads.
    for (let j = 0; j < full; j += NR) {
      let src = b + <usize>j * 4;
      let dst = out + <usize>j * <usize>kc * 4;
      for (let k = 0; k < kc; k++) {
        v128.store(dst, v128.load(src));
        v128.store(dst, v128.load(src, 16), 16);
        src += bRow;
        dst += NR * 4;
      }
    }
  } else if (bRow === 4) {
    // Columns of B are contiguous (B given transposed): 4 x 4 blocks transposed through registers.
    const kc4 = kc & ~3;
    for (let j = 0; j < full; j += NR) {
      const dst = out + <usize>j * <usize>kc * 4;
      for (let h = 0; h < NR; h += 4) {
        const col = b + <usize>(j + h) * bCol;
        for (let k = 0; k < kc4; k += 4) {
          transpose4x4(col + <usize>k * 4, bCol, dst + (<usize>k * NR + <usize>h) * 4, NR * 4);
        }
        for (let k = kc4; k < kc; k++) {
          for (let i = 0; i < 4; i++) {
            store<f32>(
              dst + (<usize>k * NR + <usize>(h + i)) * 4,
              load<f32>(col + <usize>i * bCol + <usize>k * 4),
            );
          }
        }
      }
    }
  } else {
    for (let j = 0; j < full; j += NR) {
      const dst = out + <usize>j * <usize>kc * 4;
      for (let k = 0; k < kc; k++) {
        for (let i = 0; i < NR; i++) {
          store<f32>(
            dst + (<usize>k * NR + <usize>i) * 4,
            load<f32>(b + <usize>k * bRow + <usize>(j + i) * bCol),
          );
        }
      }
    }
  }
  if (full < nc) {
    const dst = out + <usize>full * <usize>kc * 4;
    const rest = nc - full;
    for (let k = 0; k < kc; k++) {
      const src = b + <usize>k * bRow + <usize>full * bCol;
      for (let i = 0; i < NR; i++) {
        store<f32>(dst + (<usize>k * NR + <usize>i) * 4, i < rest ? load<f32>(src + <usize>i * bCol) : 0);
      }
    }
  }
}

/**
 * One MR x NR tile of C from MR rows of A (row pointers a0..a3, `aStep` bytes per k; rows past `mr`
 * repeat row 0 and are not stored) and one packed panel. Stores `mr` rows and `nr` columns.
 */
function micro(
  a0: usize,
  a1: usize,
  a2: usize,
  a3: usize,
  aStep: usize,
  panel: usize,
  kc: i32,
  c: usize,
  ldcBytes: usize,
  mr: i32,
  nr: i32,
  accumulate: bool,
): void {
  let c00 = f32x4.splat(0);
  let c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0);
  let c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0);
  let c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0);
  let c31 = f32x4.splat(0);
  let p = panel;
  let off: usize = 0;
  for (let k = 0; k < kc; k++) {
    const b0 = v128.load(p);
    const b1 = v128.load(p, 16);
    p += NR * 4;
    const x0 = v128.load32_splat(a0 + off);
    const x1 = v128.load32_splat(a1 + off);
    const x2 = v128.load32_splat(a2 + off);
    const x3 = v128.load32_splat(a3 + off);
    off += aStep;
    c00 = f32x4.add(c00, f32x4.mul(x0, b0));
    c01 = f32x4.add(c01, f32x4.mul(x0, b1));
    c10 = f32x4.add(c10, f32x4.mul(x1, b0));
    c11 = f32x4.add(c11, f32x4.mul(x1, b1));
    c20 = f32x4.add(c20, f32x4.mul(x2, b0));
    c21 = f32x4.add(c21, f32x4.mul(x2, b1));
    c30 = f32x4.add(c30, f32x4.mul(x3, b0));
    c31 = f32x4.add(c31, f32x4.mul(x3, b1));
  }
  storeRow(c, c00, c01, nr, accumulate);
  if (mr > 1) storeRow(c + ldcBytes, c10, c11, nr, accumulate);
  if (mr > 2) storeRow(c + 2 * ldcBytes, c20, c21, nr, accumulate);
  if (mr > 3) storeRow(c + 3 * ldcBytes, c30, c31, nr, accumulate);
}

function storeRow(c: usize, lo: v128, hi: v128, nr: i32, accumulate: bool): void {
  if (nr === NR) {
    if (accumulate) {
      v128.store(c, f32x4.add(v128.load(c), lo));
      v128.store(c, f32x4.add(v128.load(c, 16), hi), 16);
    } else {
      v128.store(c, lo);
      v128.store(c, hi, 16);
    }
    return;
  }
  storePartial(c, lo, hi, nr, accumulate);
}

function storePartial(c: usize, lo: v128, hi: v128, nr: i32, accumulate: bool): void {
  storeLane(c, f32x4.extract_lane(lo, 0), accumulate);
  if (nr > 1) storeLane(c + 4, f32x4.extract_lane(lo, 1), accumulate);
  if (nr > 2) storeLane(c + 8, f32x4.extract_lane(lo, 2), accumulate);
  if (nr > 3) storeLane(c + 12, f32x4.extract_lane(lo, 3), accumulate);
  if (nr > 4) storeLane(c + 16, f32x4.extract_lane(hi, 0), accumulate);
  if (nr > 5) storeLane(c + 20, f32x4.extract_lane(hi, 1), accumulate);
  if (nr > 6) storeLane(c + 24, f32x4.extract_lane(hi, 2), accumulate);
}

function storeLane(c: usize, v: f32, accumulate: bool): void {
  store<f32>(c, accumulate ? load<f32>(c) + v : v);
}
