// Elementwise f32 kernels, four lanes at a time.

// exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 split in two parts so that n ln 2
// is exact in its high part), exp(r) = 1 + r + r^2 P(r) on |r| <= ln 2 / 2 with P of degree 5 (the
// coefficients of Cephes' expf), evaluated in Estrin's form (shorter dependency chains). n is rounded
// by adding and subtracting 1.5 * 2^23, which leaves n in the low bits of the sum. 2^n is applied in
// two halves so that results in the subnormal range and overflow to infinity come out as the
// correctly scaled product. Clamping uses pmin/pmax (one instruction each on x64), which keep a NaN
// in their first operand: NaN stays NaN throughout.
const LOG2E: f32 = <f32>Math.LOG2E;
const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -2.1219444e-4;
const P0: f32 = 1.98756915e-4;
const P1: f32 = 1.3981999507e-3;
const P2: f32 = 8.3334519073e-3;
const P3: f32 = 4.1665795894e-2;
const P4: f32 = 1.6666665459e-1;
const P5: f32 = 5.0000001201e-1;
const ROUND: f32 = 12582912.0;
// Beyond these, exp is 0 or +inf in f32 whatever the rounding (and the halves of n stay in range).
const X_MIN: f32 = -104.0;
const X_MAX: f32 = 89.0;

function expLanes(x: v128): v128 {
  // Lanes below X_MIN (masked scores at -1e9 or -inf) give 0 directly: computed, their products
  // would underflow, and every underflowing multiply costs a microcode assist on x86 (~100 cycles).
  // They are evaluated at 0 instead and cleared at the end.
  const under = f32x4.lt(x, f32x4.splat(X_MIN));
  const xc = v128.andnot(f32x4.pmax(f32x4.pmin(x, f32x4.splat(X_MAX)), f32x4.splat(X_MIN)), under);
  const t = f32x4.add(f32x4.mul(xc, f32x4.splat(LOG2E)), f32x4.splat(ROUND));
  const fn = f32x4.sub(t, f32x4.splat(ROUND));
  const r = f32x4.sub(f32x4.sub(xc, f32x4.mul(fn, f32x4.splat(LN2_HI))), f32x4.mul(fn, f32x4.splat(LN2_LO)));
  const r2 = f32x4.mul(r, r);
  const r4 = f32x4.mul(r2, r2);
  const a = f32x4.add(f32x4.mul(f32x4.splat(P4), r), f32x4.splat(P5));
  const b = f32x4.add(f32x4.mul(f32x4.splat(P2), r), f32x4.splat(P3));
  const c = f32x4.add(f32x4.mul(f32x4.splat(P0), r), f32x4.splat(P1));
  const p = f32x4.add(f32x4.add(a, f32x4.mul(r2, b)), f32x4.mul(r4, c));
  const e = f32x4.add(f32x4.add(f32x4.mul(p, r2), r), f32x4.splat(1.0));
  const n = i32x4.sub(t, f32x4.splat(ROUND));
  const n1 = i32x4.shr_s(n, 1);
  const n2 = i32x4.sub(n, n1);
  const bias = i32x4.splat(127);
  const s1 = i32x4.shl(i32x4.add(n1, bias), 23);
  const s2 = i32x4.shl(i32x4.add(n2, bias), 23);
  return v128.andnot(f32x4.mul(f32x4.mul(e, s1), s2), under);
}

/** out[i] = exp(x[i]) for n f32 values (out may be x). */
export function expF32(x: usize, out: usize, n: i32): void {
  const bytes = (<usize>n) << 2;
  // One call site, so that expLanes is inlined; the tail goes through one vector in registers, and
  // lanes past the end are neither read nor written.
  for (let i: usize = 0; i < bytes; i += 16) {
    const rest = bytes - i;
    let v: v128;
    if (rest >= 16) v = v128.load(x + i);
    else {
      v = f32x4.splat(load<f32>(x + i));
      if (rest > 4) v = f32x4.replace_lane(v, 1, load<f32>(x + i + 4));
      if (rest > 8) v = f32x4.replace_lane(v, 2, load<f32>(x + i + 8));
    }
    const e = expLanes(v);
    if (rest >= 16) v128.store(out + i, e);
    else {
      store<f32>(out + i, f32x4.extract_lane(e, 0));
      if (rest > 4) store<f32>(out + i + 4, f32x4.extract_lane(e, 1));
      if (rest > 8) store<f32>(out + i + 8, f32x4.extract_lane(e, 2));
    }
  }
}
