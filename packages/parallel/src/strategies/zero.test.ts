import { expectNoLeaks, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { gradOf, initOf, type ZeroArgs } from '../../test/fixtures/zero.rank';
import { launch } from '../comm/launch';
import { createLocalCommunicator } from '../comm/local';
import { markShard } from './data';
import {
  allGatherFlat,
  allGatherVariables,
  flatLayout,
  flatRange,
  readFlat,
  reduceScatterGradients,
  writeFlat,
} from './zero';

const fixture = new URL('../../test/fixtures/zero.rank.ts', import.meta.url);

describe('sharded optimizer steps (ZeRO-1)', () => {
  it('reduce-scatters, updates each range once and gathers identical replicas on 3 worker ranks', async () => {
    // 7 + 12 + 1 + 9 = 29 values: ranges of 10, 10 and 9; 16-byte buckets give 3 rounds
    const shapes = [[7], [3, 4], [1], [9]];
    const R = 3;
    const { results } = await launch<ZeroArgs, Record<string, unknown>>({
      module: fixture,
      ranks: R,
      args: { shapes, bucketBytes: 16, missing: 2 },
      timeoutMs: 60_000,
    });
    const sizes = shapes.map((s) => s.reduce((a, b) => a * b, 1));
    const mean: number[] = [];
    const init: number[] = [];
    sizes.forEach((size, i) => {
      init.push(...initOf(i, size));
      for (let j = 0; j < size; j++) {
        if (i === 2) mean.push(0);
        else
          mean.push(
            Math.fround(
              Math.fround(gradOf(0, i, size)[j]! + gradOf(1, i, size)[j]!) + gradOf(2, i, size)[j]!,
            ) / R,
          );
      }
    });
    const expectedRanges = [
      { start: 0, end: 10 },
      { start: 10, end: 20 },
      { start: 20, end: 29 },
    ];
    const after = results[0]!.after as number[];
    results.forEach((r, rank) => {
      expect(r.range).toEqual(expectedRanges[rank]);
      const { start, end } = expectedRanges[rank]!;
      (r.gradN as number[]).forEach((g, i) => {
        expect(g).toBeCloseTo(mean[start + i]!, 5);
      });
      expect((r.gradN as number[]).length).toBe(end - start);
      // the gathered gradient equals the all-reduced one, bit for bit
      expect(r.gathered).toEqual(r.allReduced);
      // every replica holds the same values after the step
      expect(r.after).toEqual(after);
    });
    after.forEach((w, i) => {
      expect(w).toBeCloseTo(init[i]! - 0.5 * mean[i]!, 5);
    });
  });

  it('is a plain pack, update and write on one rank', () => {
    const comm = createLocalCommunicator();
    const a = tf.variable(tf.tensor2d([1, 2, 3, 4], [2, 2]));
    const b = tf.variable(tf.tensor1d([5, 6]));
    const named = new Map<string, tf.Variable>([
      ['a', a],
      ['b', b],
    ]);
    const layout = flatLayout(named);
    expect(layout.total).toBe(6);
    expect(layout.entries.map((e) => [e.key, e.offset, e.size])).toEqual([
      ['a', 0, 4],
      ['b', 4, 2],
    ]);
    expect(flatRange(layout, 0, 1)).toEqual({ start: 0, end: 6 });
    expect(flatRange(layout, 1, 4)).toEqual({ start: 2, end: 4 });
    const grads = new Map([['b', tf.tensor1d([1, 1])]]);
    const gradN = reduceScatterGradients(comm, grads, layout);
    expect(Array.from(gradN)).toEqual([0, 0, 0, 0, 1, 1]);
    expect(Array.from(readFlat(layout, { start: 3, end: 5 }))).toEqual([4, 5]);
    const paramsN = readFlat(layout);
    for (let i = 0; i < 6; i++) paramsN[i]! -= gradN[i]!;
    allGatherVariables(comm, layout, paramsN);
    expect(Array.from(a.dataSync())).toEqual([1, 2, 3, 4]);
    expect(a.shape).toEqual([2, 2]);
    expect(Array.from(b.dataSync())).toEqual([4, 5]);
    expect(Array.from(allGatherFlat(comm, layout, paramsN))).toEqual([1, 2, 3, 4, 4, 5]);
    tf.dispose([a, b, ...grads.values()]);
  });

  it('checks its arguments', () => {
    const comm = createLocalCommunicator();
    const a = tf.variable(tf.zeros([3]));
    const s = tf.variable(tf.zeros([2]));
    markShard(s);
    expect(() => flatLayout([a, s])).toThrow(/flatLayout\(\) must be replicated variables only/);
    expect(() => flatLayout([a, tf.zeros([1]) as tf.Variable])).toThrow(
      /`variables\[1\]` passed to flatLayout\(\) must be a tf.Variable/,
    );
    const layout = flatLayout([a]);
    expect(() => reduceScatterGradients(comm, { [a.name]: tf.zeros([2]) }, layout)).toThrow(
      /`grads\[".+"\]` passed to reduceScatterGradients\(\) must be a float32 tensor of shape \[3\], got tensor of shape \[2\]/,
    );
    expect(() => reduceScatterGradients(comm, {}, layout, { bucketBytes: 0 })).toThrow(
      /`config.bucketBytes`/,
    );
    expect(() => allGatherFlat(comm, layout, new Float32Array(2))).toThrow(
      /`part` passed to allGatherFlat\(\) must be a Float32Array of this rank's 3 values \[0, 3\)/,
    );
    expect(() => writeFlat(layout, new Float32Array(4))).toThrow(
      /`valuesN` passed to writeFlat\(\) must be a Float32Array of 3 values/,
    );
    expect(() => readFlat({} as never)).toThrow(/`layout` passed to readFlat\(\) must be a FlatLayout/);
    tf.dispose([a, s]);
  });

  it('leaks nothing', async () => {
    const comm = createLocalCommunicator();
    const a = tf.variable(tf.ones([4]));
    const layout = flatLayout([a]);
    await expectNoLeaks(() => {
      const grads = { [a.name]: tf.ones([4]) };
      const gradN = reduceScatterGradients(comm, grads, layout);
      const paramsN = readFlat(layout);
      for (let i = 0; i < 4; i++) paramsN[i]! -= gradN[i]!;
      allGatherVariables(comm, layout, paramsN);
      tf.dispose(grads);
    });
    expect(Array.from(a.dataSync())).toEqual([0, 0, 0, 0]);
    a.dispose();
  });
});
