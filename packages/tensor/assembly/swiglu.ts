// SwiGLU's elementwise part in one pass each way (f32x4), given s = sigmoid(gate) from the caller:
//   forward   out = silu(gate) up = gate s up
//   backward  dUp = dOut gate s,  dGate = dOut up s (1 + gate (1 - s))   (d silu(h)/dh = s (1 + h (1 - s)))
// All arrays hold n floats.

export function swigluForward(gate: usize, s: usize, up: usize, out: usize, n: i32): void {
  const n4 = n & ~3;
  for (let i = 0; i < n4; i += 4) {
    const o = <usize>i * 4;
    v128.store(out + o, f32x4.mul(f32x4.mul(v128.load(gate + o), v128.load(s + o)), v128.load(up + o)));
  }
  for (let i = n4; i < n; i++) {
    const o = <usize>i * 4;
    store<f32>(out + o, load<f32>(gate + o) * load<f32>(s + o) * load<f32>(up + o));
  }
}

export function swigluBackward(
  dOut: usize,
  gate: usize,
  s: usize,
  up: usize,
  dGate: usize,
  dUp: usize,
  n: i32,
): void {
  const one = f32x4.splat(1);
  const n4 = n & ~3;
  for (let i = 0; i < n4; i += 4) {
    const o = <usize>i * 4;
    const d = v128.load(dOut + o);
    const h = v128.load(gate + o);
    const sg = v128.load(s + o);
    v128.store(dUp + o, f32x4.mul(d, f32x4.mul(h, sg)));
    const dsilu = f32x4.mul(sg, f32x4.add(one, f32x4.mul(h, f32x4.sub(one, sg))));
    v128.store(dGate + o, f32x4.mul(f32x4.mul(d, v128.load(up + o)), dsilu));
  }
  for (let i = n4; i < n; i++) {
    const o = <usize>i * 4;
    const d = load<f32>(dOut + o);
    const h = load<f32>(gate + o);
    const sg = load<f32>(s + o);
    store<f32>(dUp + o, d * (h * sg));
    store<f32>(dGate + o, d * load<f32>(up + o) * (sg * (1 + h * (1 - sg))));
  }
}
