import { checkGradients, expectNoLeaks, Rng, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import {
  gatherRaw,
  gatherRowsByMap,
  rowMap,
  scatterRaw,
  scatterRows,
  splitRowsRaw,
  stackExperts,
  unstackExpertsRaw,
} from './rows';

const rng = new Rng('rows');

/** A many-to-one map with holes on both sides: 7 source rows into 5 destinations. */
const dest = Int32Array.from([3, -1, 0, 3, 4, 0, 3]);
const map = rowMap(dest, 5);

function plainScatter(src: number[][], d: Int32Array, m: number): number[][] {
  const out = Array.from({ length: m }, () => new Array(src[0]!.length).fill(0));
  d.forEach((j, i) => {
    if (j < 0) return;
    src[i]!.forEach((v, c) => {
      out[j]![c] += v;
    });
  });
  return out;
}

describe('row maps', () => {
  it('scatter sums the rows that meet and leaves empty destinations at zero', () => {
    const src = rng.normalTensor([7, 3]) as tf.Tensor2D;
    const out = scatterRaw(src, map);
    const expected = plainScatter(src.arraySync(), dest, 5);
    expect(out.shape).toEqual([5, 3]);
    const rows = out.arraySync() as number[][];
    for (let j = 0; j < 5; j++)
      for (let c = 0; c < 3; c++) expect(rows[j]![c]).toBeCloseTo(expected[j]![c]!, 5);
    expect((out.arraySync() as number[][])[1]).toEqual([0, 0, 0]);
    tf.dispose([src, out]);
  });

  it('gather reads each row from its destination, zero for holes', () => {
    const src = rng.normalTensor([5, 2]) as tf.Tensor2D;
    const out = gatherRaw(src, map).arraySync() as number[][];
    const s = src.arraySync();
    dest.forEach((j, i) => {
      expect(out[i]).toEqual(j < 0 ? [0, 0] : s[j]);
    });
    src.dispose();
  });

  it('gather and scatter are adjoint: <scatter(a), b> = <a, gather(b)>', () => {
    const a = rng.normalTensor([7, 4]);
    const b = rng.normalTensor([5, 4]);
    const lhs = tf.sum(tf.mul(scatterRaw(a, map), b)).dataSync()[0]!;
    const rhs = tf.sum(tf.mul(a, gatherRaw(b, map))).dataSync()[0]!;
    expect(lhs).toBeCloseTo(rhs, 4);
    tf.dispose([a, b]);
  });

  it('differentiable scatter and gather match finite differences', () => {
    const a = rng.normalTensor([7, 2]);
    const b = rng.normalTensor([5, 2]);
    checkGradients((x) => scatterRows(x, map), [a]);
    checkGradients((x) => gatherRowsByMap(x, map), [b]);
    tf.dispose([a, b]);
  });

  it('handles empty sources and destinations', () => {
    const empty = rowMap(new Int32Array(0), 3);
    const src = tf.zeros([0, 2]);
    expect(scatterRaw(src, empty).arraySync()).toEqual([
      [0, 0],
      [0, 0],
      [0, 0],
    ]);
    const ones = tf.ones([3, 2]);
    expect(gatherRaw(ones, empty).shape).toEqual([0, 2]);
    tf.dispose([src, ones]);
  });

  it('rejects destinations out of range', () => {
    expect(() => rowMap(Int32Array.from([0, 5]), 5)).toThrow(/dest\[1\] = 5 is outside \[-1, 5\)/);
  });
});

describe('splitRowsRaw / unstackExpertsRaw / stackExperts', () => {
  it('splits rows into consecutive groups, skipping empty ones', () => {
    const x = tf.tensor2d([[1], [2], [3], [4], [5], [6]]);
    const parts = splitRowsRaw(x, [2, 0, 3, 1]);
    expect(parts.map((p) => p.arraySync())).toEqual([[[1], [2]], [[3], [4], [5]], [[6]]]);
    expect(splitRowsRaw(x, [0, 6, 0]).map((p) => p.shape)).toEqual([[6, 1]]);
    expect(splitRowsRaw(x, [0, 0])).toEqual([]);
    tf.dispose([x, ...parts]);
  });

  it('unstacks chosen experts and stacks back with zeros for the missing', () => {
    const w = rng.normalTensor([4, 2, 3]);
    const parts = unstackExpertsRaw(w, [1, 3]);
    const all = w.arraySync() as number[][][];
    expect(parts[0]!.arraySync()).toEqual(all[1]);
    expect(parts[1]!.arraySync()).toEqual(all[3]);
    const back = stackExperts(
      new Map([
        [1, parts[0]!],
        [3, parts[1]!],
      ]),
      4,
      [2, 3],
    );
    const b = back.arraySync() as number[][][];
    expect(b[1]).toEqual(all[1]);
    expect(b[0]).toEqual([
      [0, 0, 0],
      [0, 0, 0],
    ]);
    expect(unstackExpertsRaw(w, [0, 1, 2, 3]).map((p) => p.arraySync())).toEqual(all);
    tf.dispose([w, back, ...parts]);
  });

  it('leaks no tensors', async () => {
    const a = rng.normalTensor([7, 2]);
    await expectNoLeaks(() =>
      tf.tidy(() => {
        const g = tf.grads((x: tf.Tensor) => tf.sum(gatherRowsByMap(scatterRows(x, map), map)))([a]);
        splitRowsRaw(a, [3, 4]);
        return g;
      }),
    );
    a.dispose();
  });
});
