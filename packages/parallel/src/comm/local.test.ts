import { expectNoLeaks, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { createLocalCommunicator } from './local';

describe('createLocalCommunicator', () => {
  it('is a world of one rank whose collectives return copies', () => {
    const comm = createLocalCommunicator({ timeoutMs: 5 });
    expect([comm.rank, comm.worldSize, comm.transport, comm.timeoutMs]).toEqual([0, 1, 'local', 5]);
    const x = Float32Array.of(1, 2);
    const sum = comm.allReduce(x, 'sum');
    expect(sum).toEqual(x);
    expect(sum).not.toBe(x);
    expect(comm.allReduce(x, 'mean')).toEqual(x);
    expect(comm.allReduce(Int32Array.of(3), 'max')).toEqual(Int32Array.of(3));
    expect(comm.allGather(x)).toEqual([x]);
    expect(comm.allToAllV([Int32Array.of(7)])).toEqual([Int32Array.of(7)]);
    expect(comm.broadcast(x, 0)).toEqual(x);
    comm.barrier();
    expect(comm.collectivesStarted).toBe(7);
  });

  it('checks its arguments', () => {
    expect(() => createLocalCommunicator({ timeoutMs: 0 })).toThrow(
      /`timeoutMs` passed to createLocalCommunicator\(\) must be a finite number > 0, got 0/,
    );
    expect(() => createLocalCommunicator().allToAllV([])).toThrow(/must be an array of 1 buffers/);
  });

  it('moves tensor data without leaking', async () => {
    const comm = createLocalCommunicator();
    await expectNoLeaks(() => {
      const t = tf.tensor1d([1, 2, 3]);
      const out = tf.tensor1d(comm.allReduce(t.dataSync() as Float32Array, 'sum'));
      t.dispose();
      return out;
    });
  });
});
