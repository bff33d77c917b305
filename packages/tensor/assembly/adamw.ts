// One AdamW update of one tensor in a single pass, with the same float32 operations in the same order
// as the elementwise ops it replaces (so results are bit-identical):
//   m1 = m beta1 + g mScale,  v1 = v beta2 + (g g) vScale
//   w1 = (w keep) - (m1 step) / (sqrt(v1) vNorm + eps)
// All arrays hold n floats; m1, v1 and w1 go to fresh outputs.

export function adamw(
  w: usize,
  m: usize,
  v: usize,
  g: usize,
  w1: usize,
  m1: usize,
  v1: usize,
  n: i32,
  beta1: f32,
  beta2: f32,
  mScale: f32,
  vScale: f32,
  step: f32,
  vNorm: f32,
  eps: f32,
  keep: f32,
  decay: bool,
): void {
  const b1 = f32x4.splat(beta1);
  const b2 = f32x4.splat(beta2);
  const ms = f32x4.splat(mScale);
  const vs = f32x4.splat(vScale);
  const st = f32x4.splat(step);
  const vn = f32x4.splat(vNorm);
  const ep = f32x4.splat(eps);
  const kp = f32x4.splat(keep);
  const n4 = n & ~3;
  for (let i = 0; i < n4; i += 4) {
    const o = <usize>i * 4;
    const gi = v128.load(g + o);
    const mi = f32x4.add(f32x4.mul(v128.load(m + o), b1), f32x4.mul(gi, ms));
    const vi = f32x4.add(f32x4.mul(v128.load(v + o), b2), f32x4.mul(f32x4.mul(gi, gi), vs));
    v128.store(m1 + o, mi);
    v128.store(v1 + o, vi);
    const update = f32x4.div(f32x4.mul(mi, st), f32x4.add(f32x4.mul(f32x4.sqrt(vi), vn), ep));
    const wi = decay ? f32x4.mul(v128.load(w + o), kp) : v128.load(w + o);
    v128.store(w1 + o, f32x4.sub(wi, update));
  }
  for (let i = n4; i < n; i++) {
    const o = <usize>i * 4;
    const gi = load<f32>(g + o);
    const mi = load<f32>(m + o) * beta1 + gi * mScale;
    const vi = load<f32>(v + o) * beta2 + gi * gi * vScale;
    store<f32>(m1 + o, mi);
    store<f32>(v1 + o, vi);
    const update = (mi * step) / (Mathf.sqrt(vi) * vNorm + eps);
    const wi = decay ? load<f32>(w + o) * keep : load<f32>(w + o);
    store<f32>(w1 + o, wi - update);
  }
}
