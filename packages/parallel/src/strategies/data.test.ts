import { expectNoLeaks, type Tensor, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { createLocalCommunicator } from '../comm/local';
import type { CollectiveOptions, Communicator, HostBuffer, ReduceOp } from '../comm/types';
import {
  allReduceGradients,
  broadcastVariables,
  globalGradNorm,
  isShardedVariable,
  markShard,
  shardRange,
  sumOverRanks,
} from './data';

/**
 * A stand-in for rank 0 of R ranks whose peers all hold `peerScale` times this rank's values: lets the
 * packing logic be checked in one thread. Records every collective call.
 */
function fakeComm(R: number, peerScale = 1): Communicator & { calls: { op: string; n: number }[] } {
  const calls: { op: string; n: number }[] = [];
  return {
    rank: 0,
    worldSize: R,
    transport: 'worker',
    timeoutMs: 1000,
    collectivesStarted: 0,
    calls,
    allReduce<T extends HostBuffer>(buf: T, op: ReduceOp = 'sum', options?: CollectiveOptions): T {
      calls.push({ op: `allReduce:${op}${options?.inPlace ? ':inPlace' : ''}`, n: buf.length });
      const total = 1 + (R - 1) * peerScale;
      const out = buf.map((v) => (op === 'sum' ? v * total : op === 'mean' ? (v * total) / R : v)) as T;
      if (!options?.inPlace) return out;
      buf.set(out);
      return buf;
    },
    allGather: () => {
      throw new Error('unused');
    },
    allToAllV: () => {
      throw new Error('unused');
    },
    send: () => {
      throw new Error('unused');
    },
    recv: () => {
      throw new Error('unused');
    },
    group: () => {
      throw new Error('unused');
    },
    broadcast<T extends HostBuffer>(buf: T): T {
      calls.push({ op: 'broadcast', n: buf.length });
      return buf.map((_, i) => 100 + i) as T;
    },
    barrier: () => {},
  };
}

function values(t: Tensor): number[] {
  return Array.from(t.dataSync());
}

describe('allReduceGradients', () => {
  it('averages replicated gradients in buckets, scales shards, fills missing gradients with zeros', () => {
    const a = tf.variable(tf.zeros([2, 3]));
    const b = tf.variable(tf.zeros([4]));
    const c = tf.variable(tf.zeros([5]));
    const s = tf.variable(tf.zeros([2]));
    markShard(s);
    const grads = {
      [a.name]: tf.ones([2, 3]),
      [b.name]: tf.tensor1d([1, 2, 3, 4]),
      [s.name]: tf.tensor1d([4, 8]),
    };
    // peers hold 3x our gradients: mean over 2 ranks = 2x ours
    const comm = fakeComm(2, 3);
    const out = allReduceGradients(comm, grads, [a, b, c, s], { bucketBytes: 40 });
    expect(values(out[a.name]!)).toEqual(Array(6).fill(2));
    expect(values(out[b.name]!)).toEqual([2, 4, 6, 8]);
    expect(values(out[c.name]!)).toEqual([0, 0, 0, 0, 0]);
    expect(out[c.name]!.shape).toEqual([5]);
    expect(values(out[s.name]!)).toEqual([2, 4]); // shard: 1/R, never all-reduced
    // 40-byte buckets: a (24 B) + b (16 B) fill the first; c (20 B) starts the second
    expect(comm.calls).toEqual([
      { op: 'allReduce:mean:inPlace', n: 10 },
      { op: 'allReduce:mean:inPlace', n: 5 },
    ]);
    expect(isShardedVariable(s)).toBe(true);
    expect(isShardedVariable(a)).toBe(false);
    tf.dispose([a, b, c, s, grads, out]);
  });

  it('sums instead of averaging on request, and is a copy on one rank', () => {
    const a = tf.variable(tf.zeros([2]));
    const grads = { [a.name]: tf.tensor1d([1, 2]) };
    const summed = allReduceGradients(fakeComm(4), grads, [a], { reduce: 'sum' });
    expect(values(summed[a.name]!)).toEqual([4, 8]);
    const local = allReduceGradients(createLocalCommunicator(), grads, [a]);
    expect(values(local[a.name]!)).toEqual([1, 2]);
    expect(local[a.name]).not.toBe(grads[a.name]);
    tf.dispose([a, grads, summed, local]);
  });

  it('takes gradients keyed by model names through a Map of variables, and returns a Map', () => {
    const a = tf.variable(tf.zeros([2]));
    const b = tf.variable(tf.zeros([1]));
    const named = new Map([
      ['layers.0.w', a],
      ['norm', b],
    ]);
    const grads = new Map([['layers.0.w', tf.tensor1d([1, 3])]]);
    const out = allReduceGradients(fakeComm(2, 3), grads, named);
    expect(out).toBeInstanceOf(Map);
    expect([...out.keys()]).toEqual(['layers.0.w', 'norm']);
    expect(values(out.get('layers.0.w')!)).toEqual([2, 6]);
    expect(values(out.get('norm')!)).toEqual([0]);
    expect(globalGradNorm(createLocalCommunicator(), grads, named)).toBeCloseTo(Math.sqrt(10), 5);
    tf.dispose([a, b, [...grads.values()], [...out.values()]]);
  });

  it('leaves earlier results intact when the next call reuses its buffers', () => {
    const a = tf.variable(tf.zeros([3]));
    const comm = fakeComm(2);
    const g1 = { [a.name]: tf.tensor1d([1, 2, 3]) };
    const g2 = { [a.name]: tf.tensor1d([7, 8, 9]) };
    const first = allReduceGradients(comm, g1, [a]);
    const second = allReduceGradients(comm, g2, [a]);
    expect(values(first[a.name]!)).toEqual([1, 2, 3]);
    expect(values(second[a.name]!)).toEqual([7, 8, 9]);
    tf.dispose([a, g1, g2, first, second]);
  });

  it('checks its arguments', () => {
    const a = tf.variable(tf.zeros([2]));
    const comm = createLocalCommunicator();
    expect(() => allReduceGradients(comm, { [a.name]: tf.zeros([3]) }, [a])).toThrow(
      /`grads\[".+"\]` passed to allReduceGradients\(\) must be a float32 tensor of shape \[2\], got tensor of shape \[3\]/,
    );
    expect(() => allReduceGradients(comm, {}, [a], { reduce: 'max' as 'sum' })).toThrow(/`config.reduce`/);
    expect(() => allReduceGradients(comm, {}, [tf.zeros([1]) as tf.Variable])).toThrow(
      /`variables\[0\]` passed to allReduceGradients\(\) must be a tf.Variable/,
    );
    a.dispose();
  });

  it('leaks nothing', async () => {
    const a = tf.variable(tf.zeros([3]));
    const s = tf.variable(tf.zeros([3]));
    markShard(s);
    await expectNoLeaks(() => {
      const grads = { [a.name]: tf.ones([3]), [s.name]: tf.ones([3]) };
      const out = allReduceGradients(fakeComm(2), grads, [a, s]);
      tf.dispose([grads, out]);
    });
    tf.dispose([a, s]);
  });
});

describe('globalGradNorm, broadcastVariables, sumOverRanks, shardRange', () => {
  it('counts replicated gradients once and shards from every rank', () => {
    const a = tf.variable(tf.zeros([2]));
    const s = tf.variable(tf.zeros([1]));
    markShard(s);
    const grads = { [a.name]: tf.tensor1d([3, 4]), [s.name]: tf.tensor1d([2]) };
    // shard sum of squares 4 on this rank, 4 * 3 on the peer: 25 + 16
    expect(globalGradNorm(fakeComm(2, 3), grads, [a, s])).toBeCloseTo(Math.sqrt(41), 5);
    expect(globalGradNorm(createLocalCommunicator(), grads, [a, s])).toBeCloseTo(Math.sqrt(29), 5);
    tf.dispose([a, s, grads]);
  });

  it("copies the root's replicated variables and skips shards", () => {
    const a = tf.variable(tf.zeros([2]));
    const s = tf.variable(tf.zeros([1]));
    markShard(s);
    const comm = { ...fakeComm(2), rank: 1 };
    broadcastVariables(comm, [a, s]);
    expect(values(a)).toEqual([100, 101]);
    expect(values(s)).toEqual([0]);
    expect(comm.calls).toEqual([{ op: 'broadcast', n: 2 }]);
    tf.dispose([a, s]);
  });

  it('sums balance counts over ranks and splits batches', () => {
    expect(sumOverRanks(fakeComm(2))(Float32Array.of(1, 2))).toEqual(Float32Array.of(2, 4));
    expect([0, 1, 2, 3].map((r) => shardRange(10, r, 4))).toEqual([
      { start: 0, end: 3 },
      { start: 3, end: 6 },
      { start: 6, end: 8 },
      { start: 8, end: 10 },
    ]);
    expect(() => shardRange(10, 4, 4)).toThrow(
      /`rank` passed to shardRange\(\) must be an integer in \[0, 3\], got 4/,
    );
  });
});
