import { checkGradients, expectNoLeaks, Rng, tf } from '@switchyard/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import { CausalSelfAttention, causalMask, RMSNorm, RotaryEmbedding } from './layers';

/** Reference attention in float64 on the host, written from the definitions (HF rotate-half RoPE, repeat_kv). */
function referenceAttention(
  x: number[][],
  B: number,
  S: number,
  w: { q: number[][]; k: number[][]; v: number[][]; o: number[][] },
  H: number,
  G: number,
  theta: number,
): number[][] {
  const D = x[0]!.length;
  const A = D / H;
  const proj = (row: number[], m: number[][]) =>
    m[0]!.map((_, j) => row.reduce((s, xi, i) => s + xi * m[i]![j]!, 0));
  const rope = (vec: number[], pos: number) => {
    const half = A / 2;
    const out = new Array<number>(A);
    for (let i = 0; i < half; i++) {
      const angle = pos / theta ** ((2 * i) / A);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      out[i] = vec[i]! * c - vec[i + half]! * s;
      out[i + half] = vec[i + half]! * c + vec[i]! * s;
    }
    return out;
  };
  const out: number[][] = [];
  for (let b = 0; b < B; b++) {
    const rows = x.slice(b * S, (b + 1) * S);
    const q = rows.map((r) => proj(r, w.q));
    const k = rows.map((r) => proj(r, w.k));
    const v = rows.map((r) => proj(r, w.v));
    for (let s = 0; s < S; s++) {
      const concat: number[] = [];
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / G));
        const qh = rope(q[s]!.slice(h * A, (h + 1) * A), s);
        const scores: number[] = [];
        for (let t = 0; t <= s; t++) {
          const kh = rope(k[t]!.slice(g * A, (g + 1) * A), t);
          scores.push(qh.reduce((acc, qi, i) => acc + qi * kh[i]!, 0) / Math.sqrt(A));
        }
        const m = Math.max(...scores);
        const e = scores.map((z) => Math.exp(z - m));
        const z = e.reduce((a, c) => a + c, 0);
        const head = new Array<number>(A).fill(0);
        for (let t = 0; t <= s; t++) for (let i = 0; i < A; i++) head[i]! += (e[t]! / z) * v[t]![g * A + i]!;
        concat.push(...head);
      }
      out.push(proj(concat, w.o));
    }
  }
  return out;
}

function maxAbsDiff(a: number[][], b: number[][]): number {
  let m = 0;
  a.forEach((row, i) => {
    row.forEach((v, j) => {
      m = Math.max(m, Math.abs(v - b[i]![j]!));
    });
  });
  return m;
}

describe('RotaryEmbedding', () => {
  const rope = new RotaryEmbedding(8, 10000);
  afterAll(() => rope.dispose());

  it('uses inv_freq = 1 / theta^(2i / headDim), rounded to float32', () => {
    expect(Array.from(rope.invFreq)).toEqual([1, 0.1, 0.01, 0.001].map(Math.fround));
  });

  it('lays out cos/sin as [freqs, freqs] per position (rotate-half convention)', () => {
    const { cosSA, sinSA } = rope.tables(3, 2);
    const cos = cosSA.arraySync();
    const sin = sinSA.arraySync();
    for (let s = 0; s < 2; s++) {
      for (let i = 0; i < 4; i++) {
        const angle = (3 + s) * rope.invFreq[i]!;
        expect(cos[s]![i]).toBeCloseTo(Math.cos(angle), 6);
        expect(cos[s]![i + 4]).toBe(cos[s]![i]);
        expect(sin[s]![i]).toBeCloseTo(Math.sin(angle), 6);
        expect(sin[s]![i + 4]).toBe(sin[s]![i]);
      }
    }
    tf.dispose([cosSA, sinSA]);
  });

  it('rotates half: x @ M = [-x2, x1]', () => {
    const y = tf.tidy(() => tf.matMul(tf.tensor2d([[1, 2, 3, 4, 5, 6, 7, 8]]), rope.rotation()).arraySync());
    expect(y).toEqual([[-5, -6, -7, -8, 1, 2, 3, 4]]);
  });
});

describe('RMSNorm', () => {
  it('computes w * x / sqrt(mean(x^2) + eps) with eps inside the root', () => {
    const norm = new RMSNorm(4, 0.5);
    tf.tidy(() => norm.weightD.assign(tf.tensor1d([1, 2, 3, 4])));
    const x = [0.1, -0.2, 0.3, 0.4];
    const ms = x.reduce((s, v) => s + v * v, 0) / 4;
    const y = tf.tidy(() => norm.forward(tf.tensor2d([x])).arraySync()[0]!);
    y.forEach((v, i) => {
      expect(v).toBeCloseTo(((i + 1) * x[i]!) / Math.sqrt(ms + 0.5), 6);
    });
    const r = checkGradients((xt) => norm.forward(xt as tf.Tensor2D), [new Rng(1).normalTensor([3, 4])]);
    expect(r.failures).toHaveLength(0);
    norm.dispose();
  });
});

describe('CausalSelfAttention', () => {
  const cases = [
    { H: 4, G: 4, label: 'multi-head' },
    { H: 4, G: 2, label: 'grouped-query (2 query heads per KV head)' },
    { H: 4, G: 1, label: 'multi-query' },
  ];
  for (const { H, G, label } of cases) {
    it(`matches a float64 reference: ${label}`, () => {
      const D = 16;
      const B = 2;
      const S = 5;
      const rng = new Rng(7);
      const attn = new CausalSelfAttention(D, H, G, 0.3, rng.fork('w'));
      const rope = new RotaryEmbedding(D / H, 10000);
      const x = rng.fork('x').normalTensor([B * S, D]) as tf.Tensor2D;
      const got = tf.tidy(() => {
        const { cosSA, sinSA } = rope.tables(0, S);
        return attn.forward(x, B, S, rope, cosSA, sinSA, causalMask(S, 0)).yTD.arraySync();
      });
      const w = {
        q: attn.wqDX.arraySync() as number[][],
        k: attn.wkDY.arraySync() as number[][],
        v: attn.wvDY.arraySync() as number[][],
        o: attn.woXD.arraySync() as number[][],
      };
      const want = referenceAttention(x.arraySync() as number[][], B, S, w, H, G, 10000);
      expect(maxAbsDiff(got, want)).toBeLessThan(1e-5);
      tf.dispose(x);
      attn.dispose();
      rope.dispose();
    });
  }

  it('with a KV cache gives the rows of the full computation', () => {
    const D = 16;
    const S = 6;
    const rng = new Rng(3);
    const attn = new CausalSelfAttention(D, 4, 2, 0.3, rng.fork('w'));
    const rope = new RotaryEmbedding(4, 500);
    const x = rng.fork('x').normalTensor([2 * S, D]) as tf.Tensor2D;
    const run = (
      xTD: tf.Tensor2D,
      P: number,
      n: number,
      past?: Parameters<CausalSelfAttention['forward']>[7],
    ) => {
      const { cosSA, sinSA } = rope.tables(P, n);
      return attn.forward(xTD, 2, n, rope, cosSA, sinSA, causalMask(n, P), past);
    };
    const [full, cached] = tf.tidy(() => {
      const fullTD = run(x, 0, S).yTD.reshape([2, S, D]);
      const x3 = x.reshape([2, S, D]);
      const first = run(x3.slice([0, 0, 0], [2, 4, D]).reshape([8, D]) as tf.Tensor2D, 0, 4);
      const second = run(x3.slice([0, 4, 0], [2, 2, D]).reshape([4, D]) as tf.Tensor2D, 4, 2, first.kv);
      expect(second.kv.kBGPA.shape).toEqual([2, 2, 6, 4]);
      return [fullTD.slice([0, 4, 0], [2, 2, D]).arraySync(), second.yTD.reshape([2, 2, D]).arraySync()];
    });
    expect(maxAbsDiff((full as number[][][]).flat(), (cached as number[][][]).flat())).toBeLessThan(1e-5);
    tf.dispose(x);
    attn.dispose();
    rope.dispose();
  });

  it('has correct gradients with respect to its input', () => {
    const rng = new Rng(11);
    const attn = new CausalSelfAttention(8, 2, 1, 0.3, rng.fork('w'));
    const rope = new RotaryEmbedding(4, 10000);
    const { cosSA, sinSA } = rope.tables(0, 3);
    const mask = causalMask(3, 0);
    const r = checkGradients(
      (xt) => attn.forward(xt as tf.Tensor2D, 2, 3, rope, cosSA, sinSA, mask).yTD,
      [rng.fork('x').normalTensor([6, 8])],
    );
    expect(r.failures).toHaveLength(0);
    tf.dispose([cosSA, sinSA, mask]);
    attn.dispose();
    rope.dispose();
  });

  it('leaks no tensors', async () => {
    const attn = new CausalSelfAttention(8, 2, 1, 0.1, new Rng(1));
    const rope = new RotaryEmbedding(4, 10000);
    rope.rotation();
    const x = new Rng(2).normalTensor([4, 8]) as tf.Tensor2D;
    await expectNoLeaks(() =>
      tf.tidy(() => {
        const { cosSA, sinSA } = rope.tables(0, 2);
        return attn.forward(x, 2, 2, rope, cosSA, sinSA, causalMask(2, 0)).yTD;
      }),
    );
    tf.dispose(x);
    attn.dispose();
    rope.dispose();
  });
});

describe('causalMask', () => {
  it('blocks keys after each query position, offset by the cached length', () => {
    const m = causalMask(2, 3);
    expect(m.arraySync()).toEqual([
      [0, 0, 0, 0, -1e9],
      [0, 0, 0, 0, 0],
    ]);
    m.dispose();
  });
});
