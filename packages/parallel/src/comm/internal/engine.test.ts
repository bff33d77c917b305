// The collective algorithms, run on R ranks stepped in lockstep in one thread (a memory link), so
// every size, world size and failure path is cheap to cover. Worker and ZeroMQ transports are tested
// in launch.test.ts and zmq.test.ts.
import { expectNoLeaks, isSwitchyardError, type SwitchyardError, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import type { HostBuffer } from '../types';
import {
  CollectiveEngine,
  type Link,
  PEER_DONE,
  PEER_FAILED,
  PEER_RUNNING,
  type PendingCollective,
  type WireMessage,
} from './engine';

class MemoryNet {
  readonly queues: WireMessage[][];
  readonly states: number[];
  readonly reasons = new Map<number, string>();
  constructor(readonly size: number) {
    this.queues = Array.from({ length: size }, () => []);
    this.states = new Array(size).fill(PEER_RUNNING);
  }
  link(rank: number): Link {
    return {
      rank,
      worldSize: this.size,
      transport: 'worker',
      send: (dst, msg) => this.queues[dst]!.push(msg),
      poll: (deliver) => {
        for (const m of this.queues[rank]!.splice(0)) deliver(m);
      },
      peerState: (r) => this.states[r]!,
      peerReason: (r) => this.reasons.get(r),
      waitToken: () => 0,
      wait: () => {},
      abort: (reason) => {
        this.states[rank] = PEER_FAILED;
        if (!this.reasons.has(rank)) this.reasons.set(rank, reason);
      },
    };
  }
}

function world(size: number, timeoutMs = 2000): { net: MemoryNet; comms: CollectiveEngine[] } {
  const net = new MemoryNet(size);
  return { net, comms: Array.from({ length: size }, (_, r) => new CollectiveEngine(net.link(r), timeoutMs)) };
}

type Outcome<T> = { ok: true; value: T } | { ok: false; error: SwitchyardError };

/** Steps every pending collective round-robin until each has completed or failed. */
function lockstep<T>(pendings: readonly (PendingCollective<T> | undefined)[]): Outcome<T>[] {
  const out: (Outcome<T> | undefined)[] = pendings.map(() => undefined);
  for (let iter = 0; out.some((o, i) => o === undefined && pendings[i] !== undefined); iter++) {
    if (iter > 1e7) throw new Error('lockstep did not converge');
    pendings.forEach((p, i) => {
      if (p === undefined || out[i] !== undefined) return;
      try {
        if (p.step()) out[i] = { ok: true, value: p.result() };
      } catch (e) {
        out[i] = { ok: false, error: e as SwitchyardError };
      }
    });
  }
  return out as Outcome<T>[];
}

function values<T>(outcomes: Outcome<T>[]): T[] {
  return outcomes.map((o) => {
    if (!o.ok) throw o.error;
    return o.value;
  });
}

function data(rank: number, n: number): Float32Array {
  return Float32Array.from(
    { length: n },
    (_, i) => Math.sin(rank * 31 + i) * (1 + rank) * 10 ** ((i % 5) - 2),
  );
}

/** The rank-order float32 reduction every rank must reproduce bit for bit. */
function reference(inputs: readonly HostBuffer[], op: 'sum' | 'mean' | 'max'): HostBuffer {
  const acc = inputs[0]!.slice();
  for (let r = 1; r < inputs.length; r++) {
    for (let i = 0; i < acc.length; i++) {
      acc[i] = op === 'max' ? Math.max(acc[i]!, inputs[r]![i]!) : acc[i]! + inputs[r]![i]!;
    }
  }
  if (op === 'mean') for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! / inputs.length;
  return acc;
}

describe('allReduce', () => {
  for (const size of [1, 2, 3, 4]) {
    for (const n of [0, 1, 5, 70_001]) {
      it(`sum, mean and max on ${size} rank(s), ${n} elements, bit-identical on every rank`, () => {
        const { comms } = world(size);
        const inputs = comms.map((_, r) => data(r, n));
        for (const op of ['sum', 'mean', 'max'] as const) {
          const got = values(lockstep(comms.map((c, r) => c.beginAllReduce(inputs[r]!, op))));
          const want = reference(inputs, op);
          for (const g of got) {
            expect(g).toBeInstanceOf(Float32Array);
            expect(Buffer.from(g.buffer).equals(Buffer.from(want.buffer))).toBe(true);
          }
        }
        // inputs are left untouched, results never alias them
        comms.forEach((_, r) => {
          expect(inputs[r]).toEqual(data(r, n));
        });
      });
    }
  }

  it('writes the result into the input buffer with inPlace', () => {
    for (const size of [2, 3]) {
      const { comms } = world(size);
      const inputs = comms.map((_, r) => data(r, 70_001));
      const want = reference(inputs, 'mean');
      const got = values(
        lockstep(comms.map((c, r) => c.beginAllReduce(inputs[r]!, 'mean', { inPlace: true }))),
      );
      got.forEach((g, r) => {
        expect(g).toBe(inputs[r]);
        expect(Buffer.from(g.buffer).equals(Buffer.from(want.buffer))).toBe(true);
      });
    }
  });

  it('reduces Int32Array with sum and max', () => {
    const { comms } = world(3);
    const inputs = [Int32Array.of(1, -5, 7), Int32Array.of(10, 2, -7), Int32Array.of(100, 3, 0)];
    expect(values(lockstep(comms.map((c, r) => c.beginAllReduce(inputs[r]!, 'sum'))))).toEqual(
      Array(3).fill(Int32Array.of(111, 0, 0)),
    );
    expect(values(lockstep(comms.map((c, r) => c.beginAllReduce(inputs[r]!, 'max'))))).toEqual(
      Array(3).fill(Int32Array.of(100, 3, 7)),
    );
  });

  it('rejects buffers of different lengths or dtypes on different ranks', () => {
    const a = world(2);
    const lens = lockstep([
      a.comms[0]!.beginAllReduce(new Float32Array(4)),
      a.comms[1]!.beginAllReduce(new Float32Array(5)),
    ]);
    expect(lens[0]).toMatchObject({ ok: false });
    const e0 = (lens[0] as { error: SwitchyardError }).error;
    expect(e0.code).toBe('INVALID_ARGUMENT');
    expect(e0.message).toMatch(
      /allReduce\(\) needs the same buffer length on every rank: rank 0 passed 4, rank 1 passed 5/,
    );
    const b = world(2);
    const types = lockstep([
      b.comms[0]!.beginAllReduce(new Float32Array(4)),
      b.comms[1]!.beginAllReduce(new Int32Array(4)) as unknown as PendingCollective<Float32Array>,
    ]);
    expect((types[1] as { error: SwitchyardError }).error.message).toMatch(
      /needs the same dtype on every rank: rank 1 passed Int32Array, rank 0 passed Float32Array/,
    );
  });

  it('validates its arguments before starting', () => {
    const { comms } = world(2);
    const c = comms[0]!;
    expect(() => c.allReduce([1, 2] as unknown as Float32Array)).toThrow(
      /`buf` passed to allReduce\(\) must be a Float32Array or an Int32Array, got \[1, 2\]/,
    );
    expect(() => c.allReduce(new Int32Array(2), 'mean')).toThrow(/must be a Float32Array for op "mean"/);
    expect(() => c.allReduce(new Float32Array(2), 'min' as 'sum')).toThrow(
      /`op` passed to allReduce\(\) must be one of/,
    );
    expect(() => c.allReduce(new Float32Array(2), 'sum', { timeoutMs: 0 })).toThrow(/options.timeoutMs/);
    expect(c.collectivesStarted).toBe(0);
  });
});

describe('allGather, allToAllV, broadcast, barrier', () => {
  it('gathers buffers of different lengths from every rank', () => {
    const { comms } = world(3);
    const got = values(
      lockstep(comms.map((c, r) => c.beginAllGather(Int32Array.from({ length: r }, () => r)))),
    );
    for (const g of got) expect(g).toEqual([Int32Array.of(), Int32Array.of(1), Int32Array.of(2, 2)]);
  });

  it('exchanges variable-size buffers, empty ones included', () => {
    const { comms } = world(4);
    // rank r sends r*j values "r->j" to rank j
    const sends = comms.map((_, r) =>
      Array.from({ length: 4 }, (_, j) => Float32Array.from({ length: r * j }, () => r * 10 + j)),
    );
    const got = values(lockstep(comms.map((c, r) => c.beginAllToAllV(sends[r]!))));
    got.forEach((recv, j) => {
      recv.forEach((buf, r) => {
        expect(buf).toEqual(Float32Array.from({ length: r * j }, () => r * 10 + j));
      });
    });
  });

  it('broadcasts from any root and checks the length', () => {
    const { comms } = world(3);
    for (let root = 0; root < 3; root++) {
      const got = values(
        lockstep(
          comms.map((c, r) => c.beginBroadcast(Float32Array.of(r === root ? root + 0.5 : 0, r), root)),
        ),
      );
      for (const g of got) expect(g).toEqual(Float32Array.of(root + 0.5, root));
    }
    expect(() => comms[0]!.broadcast(new Float32Array(1), 3)).toThrow(
      /`root` passed to broadcast\(\) must be an integer in \[0, 2\], got 3/,
    );
  });

  it('holds a barrier until every rank arrives', () => {
    const { comms } = world(3);
    const p = comms.map((c) => c.beginBarrier());
    expect(p[0]!.step()).toBe(false);
    expect(p[1]!.step()).toBe(false);
    expect(p[0]!.step()).toBe(false); // rank 2 has not arrived
    expect(lockstep(p).every((o) => o.ok)).toBe(true);
  });

  it('checks allToAllV arguments', () => {
    const { comms } = world(2);
    expect(() => comms[0]!.allToAllV([new Float32Array(1)])).toThrow(
      /`send` passed to allToAllV\(\) must be an array of 2 buffers \(one per rank\), got "an array of 1"/,
    );
    expect(() => comms[0]!.allToAllV([new Float32Array(1), new Int32Array(1)])).toThrow(
      /`send\[1\]` passed to allToAllV\(\) must be a Float32Array like send\[0\]/,
    );
  });

  it('runs many collectives back to back with messages arriving early', () => {
    const { comms } = world(2);
    // rank 1 runs ahead by one collective: its next message must wait in rank 0's mailbox
    const first = comms.map((c, r) => c.beginAllReduce(Float32Array.of(r)));
    expect(first[1]!.step()).toBe(false);
    expect(first[0]!.step()).toBe(true);
    expect(first[1]!.step()).toBe(true);
    const second1 = comms[1]!.beginAllGather(Float32Array.of(5));
    expect(second1.step()).toBe(false);
    const second0 = comms[0]!.beginAllGather(Float32Array.of(4));
    expect(values(lockstep([second0, second1]))).toEqual([
      [Float32Array.of(4), Float32Array.of(5)],
      [Float32Array.of(4), Float32Array.of(5)],
    ]);
    expect(comms[0]!.collectivesStarted).toBe(2);
  });
});

describe('failures', () => {
  it('times out naming the rank that never arrives, then tells the others', () => {
    const { net, comms } = world(3, 40);
    const t0 = Date.now();
    const out = lockstep([comms[0]!.beginAllReduce(Float32Array.of(1)), undefined, undefined]);
    const err = (out[0] as { error: SwitchyardError }).error;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(39);
    expect(err.code).toBe('TIMEOUT');
    expect(err.message).toMatch(/^allReduce #0 on rank 0 timed out after 40 ms waiting for ranks 1, 2$/);
    expect(err.details.missing).toEqual([1, 2]);
    expect(net.states[0]).toBe(PEER_FAILED); // rank 0 announced its own failure
  });

  it('makes a rank waiting on a failed rank fail at once, with the root cause', () => {
    const { comms } = world(2, 40);
    lockstep([comms[0]!.beginAllReduce(Float32Array.of(1)), undefined]); // rank 0 times out
    expect(lockstep([undefined, comms[1]!.beginAllReduce(Float32Array.of(1))])[1]!.ok).toBe(true); // rank 0 had sent
    const t1 = Date.now();
    const late = lockstep([undefined, comms[1]!.beginBarrier({ timeoutMs: 10_000 })]);
    const lateErr = (late[1] as { error: SwitchyardError }).error;
    expect(Date.now() - t1).toBeLessThan(5_000);
    expect(lateErr.code).toBe('RANK_FAILED');
    expect(lateErr.message).toMatch(
      /barrier #1 on rank 1 cannot complete: rank 0 failed \(allReduce #0 on rank 0 timed out after 40 ms waiting for rank 1\)/,
    );
  });

  it('fails at once with RANK_FAILED when a peer is known to be dead, keeping its reason', () => {
    const { net, comms } = world(3, 60_000);
    net.states[2] = PEER_FAILED;
    net.reasons.set(2, 'rank 2 exited with code 3 before its rank function returned');
    const out = lockstep([comms[0]!.beginBarrier(), comms[1]!.beginBarrier()]);
    for (const o of out) {
      expect(o.ok).toBe(false);
      const e = (o as { error: SwitchyardError }).error;
      expect(isSwitchyardError(e, 'RANK_FAILED')).toBe(true);
      expect(e.message).toMatch(/cannot complete: rank 2 failed \(rank 2 exited with code 3/);
    }
  });

  it('says when a peer finished without joining the collective', () => {
    const { net, comms } = world(2);
    net.states[1] = PEER_DONE;
    const out = lockstep([comms[0]!.beginAllGather(Float32Array.of(1))]);
    expect((out[0] as { error: SwitchyardError }).error.message).toMatch(
      /allGather #0 on rank 0 cannot complete: rank 1 finished its rank function without joining this collective/,
    );
  });

  it('uses a message a peer sent before it finished', () => {
    const { net, comms } = world(2);
    const p1 = comms[1]!.beginAllGather(Float32Array.of(7));
    p1.step(); // posts its message
    net.states[1] = PEER_DONE;
    const [o0] = lockstep([comms[0]!.beginAllGather(Float32Array.of(3))]);
    expect(o0).toEqual({ ok: true, value: [Float32Array.of(3), Float32Array.of(7)] });
  });

  it('detects ranks calling different collectives', () => {
    const { comms } = world(2);
    const out = lockstep<unknown>([comms[0]!.beginAllReduce(Float32Array.of(1)), comms[1]!.beginBarrier()]);
    const errors = out.map((o) => (o as { error: SwitchyardError }).error);
    // the rank that sees the other's message first raises the mismatch; the other learns it from its failure
    expect(errors.map((e) => e.code).sort()).toEqual(['RANK_FAILED', 'STATE_INVALID']);
    for (const e of errors) {
      expect(e.message).toMatch(
        /collective mismatch at collective #0: rank 1 called barrier, rank 0 called allReduce/,
      );
    }
  });

  it('refuses further collectives after a failure', () => {
    const { comms } = world(2, 5);
    lockstep([comms[0]!.beginBarrier()]);
    expect(() => comms[0]!.barrier()).toThrow(
      /barrier\(\) was called on rank 0 after an earlier collective failed \(barrier #0 on rank 0 timed out/,
    );
  });
});

describe('point-to-point messages', () => {
  it('delivers messages by sender and tag, in order, apart from collectives', () => {
    const { comms } = world(3);
    const [c0, c1, c2] = comms as [CollectiveEngine, CollectiveEngine, CollectiveEngine];
    const x = Float32Array.of(1, 2, 3);
    c0.send(1, x, 5);
    x[0] = 99; // the message holds a copy
    c0.send(1, Float32Array.of(4), 5);
    c0.send(1, Int32Array.of(7), 6);
    c2.send(1, Float32Array.of(8), 5);
    // a collective runs while the messages wait; it neither takes nor counts them
    const sums = values(lockstep(comms.map((c, r) => c.beginAllReduce(Float32Array.of(r)))));
    expect(sums[1]).toEqual(Float32Array.of(3));
    expect(c1.recv(0, 6)).toEqual(Int32Array.of(7));
    expect(c1.recv(2, 5)).toEqual(Float32Array.of(8));
    expect(c1.recv(0, 5)).toEqual(Float32Array.of(1, 2, 3));
    expect(c1.recv(0, 5)).toEqual(Float32Array.of(4));
    expect(comms.map((c) => c.collectivesStarted)).toEqual([1, 1, 1]);
  });

  it('times out naming the sender, and tells the others', () => {
    const { net, comms } = world(2, 30);
    const t0 = Date.now();
    let err: SwitchyardError | undefined;
    try {
      comms[1]!.recv(0, 3);
    } catch (e) {
      err = e as SwitchyardError;
    }
    expect(Date.now() - t0).toBeGreaterThanOrEqual(29);
    expect(err?.code).toBe('TIMEOUT');
    expect(err?.message).toMatch(/^recv from rank 0 \(tag 3\) on rank 1 timed out after 30 ms$/);
    expect(err?.details.missing).toEqual([0]);
    expect(net.states[1]).toBe(PEER_FAILED);
    expect(() => comms[1]!.send(0, Float32Array.of(1))).toThrow(
      /send\(\) was called on rank 1 after an earlier collective failed/,
    );
  });

  it('fails at once when the sender failed or finished without sending', () => {
    const { net, comms } = world(3, 60_000);
    net.states[0] = PEER_FAILED;
    net.reasons.set(0, 'rank 0 exited with code 3');
    expect(() => comms[1]!.recv(0, 1)).toThrow(
      /^recv from rank 0 \(tag 1\) on rank 1 cannot complete: rank 0 failed \(rank 0 exited with code 3\)$/,
    );
    const other = world(2, 60_000);
    other.comms[0]!.send(1, Float32Array.of(2), 4);
    other.net.states[0] = PEER_DONE;
    expect(other.comms[1]!.recv(0, 4)).toEqual(Float32Array.of(2)); // sent before it finished
    expect(() => other.comms[1]!.recv(0, 4)).toThrow(
      /cannot complete: rank 0 finished its rank function without sending it/,
    );
  });

  it('checks its arguments', () => {
    const { comms } = world(2);
    expect(() => comms[0]!.send(0, Float32Array.of(1))).toThrow(
      /`dst` passed to send\(\) must be another rank/,
    );
    expect(() => comms[0]!.send(2, Float32Array.of(1))).toThrow(/`dst` passed to send\(\)/);
    expect(() => comms[0]!.send(1, [1] as unknown as Float32Array)).toThrow(/`buf` passed to send\(\)/);
    expect(() => comms[0]!.send(1, Float32Array.of(1), -1)).toThrow(
      /`tag` passed to send\(\) must be a non-negative/,
    );
    expect(() => comms[0]!.recv(1, 0.5)).toThrow(/`tag` passed to recv\(\)/);
    expect(() => comms[0]!.recv(1, 0, { timeoutMs: 0 })).toThrow(/`options.timeoutMs` passed to recv\(\)/);
  });
});

describe('subgroups', () => {
  it('run collectives among their members only, bit-identical, beside the world', () => {
    const { comms } = world(4);
    const evens = [comms[0]!.group([2, 0]), comms[2]!.group([0, 2])] as CollectiveEngine[];
    const odds = [comms[1]!.group([1, 3]), comms[3]!.group([3, 1])] as CollectiveEngine[];
    expect(evens.map((g) => [g.rank, g.worldSize])).toEqual([
      [0, 2],
      [1, 2],
    ]);
    const n = 70_001;
    const inputs = [0, 1, 2, 3].map((r) => data(r, n));
    // every rank starts a world all-reduce and a group all-reduce, messages interleaving
    const world1 = lockstep(comms.map((c, r) => c.beginAllReduce(inputs[r]!)));
    const groups = lockstep([
      evens[0]!.beginAllReduce(inputs[0]!),
      odds[0]!.beginAllReduce(inputs[1]!),
      evens[1]!.beginAllReduce(inputs[2]!),
      odds[1]!.beginAllReduce(inputs[3]!),
    ]);
    const got = values(groups);
    const wantEven = reference([inputs[0]!, inputs[2]!], 'sum');
    const wantOdd = reference([inputs[1]!, inputs[3]!], 'sum');
    expect(Buffer.from(got[0]!.buffer).equals(Buffer.from(wantEven.buffer))).toBe(true);
    expect(Buffer.from(got[2]!.buffer).equals(Buffer.from(wantEven.buffer))).toBe(true);
    expect(Buffer.from(got[1]!.buffer).equals(Buffer.from(wantOdd.buffer))).toBe(true);
    expect(values(world1)[3]).toEqual(reference(inputs, 'sum'));
    // the same ranks give the same communicator; all ranks give the world's
    expect(comms[0]!.group([0, 2])).toBe(evens[0]);
    expect(comms[0]!.group([3, 2, 1, 0])).toBe(comms[0]);
    // point-to-point inside a group uses group numbering
    odds[1]!.send(0, Float32Array.of(9), 2);
    expect(odds[0]!.recv(1, 2)).toEqual(Float32Array.of(9));
    expect(() => comms[1]!.recv(3, 2, { timeoutMs: 1 })).toThrow(/timed out/); // not delivered to the world
  });

  it('keeps messages that arrive before the group is created', () => {
    const { comms } = world(3);
    const g2 = comms[2]!.group([1, 2]) as CollectiveEngine;
    const p2 = g2.beginBroadcast(Float32Array.of(5, 6), 1);
    p2.step(); // posts to rank 1, which has no such group yet
    values(lockstep(comms.map((c) => c.beginAllGather(Int32Array.of(c.rank)))));
    const g1 = comms[1]!.group([1, 2]) as CollectiveEngine;
    expect(values(lockstep([g1.beginBroadcast(new Float32Array(2), 1), p2]))).toEqual([
      Float32Array.of(5, 6),
      Float32Array.of(5, 6),
    ]);
  });

  it('names world ranks in errors, and a failure breaks every communicator of the rank', () => {
    const { net, comms } = world(4, 30);
    const g = comms[3]!.group([1, 3]) as CollectiveEngine;
    const [o] = lockstep([g.beginAllReduce(Float32Array.of(1))]);
    const err = (o as { error: SwitchyardError }).error;
    expect(err.message).toMatch(
      /^allReduce #0 of group \[1, 3\] on rank 3 timed out after 30 ms waiting for rank 1$/,
    );
    expect(err.details.missing).toEqual([1]);
    expect(net.states[3]).toBe(PEER_FAILED);
    expect(() => comms[3]!.barrier()).toThrow(
      /after an earlier collective failed \(allReduce #0 of group \[1, 3\]/,
    );
    const late = comms[1]!.group([1, 3]) as CollectiveEngine;
    expect(late.allReduce(Float32Array.of(2))).toEqual(Float32Array.of(3)); // rank 3 had sent its part
    const [o1] = lockstep([late.beginBarrier()]);
    expect((o1 as { error: SwitchyardError }).error.message).toMatch(
      /^barrier #1 of group \[1, 3\] on rank 1 cannot complete: rank 3 failed \(allReduce #0 of group \[1, 3\] on rank 3 timed out/,
    );
  });

  it('checks its members', () => {
    const { comms } = world(3);
    expect(() => comms[0]!.group([])).toThrow(/`ranks` passed to group\(\) must be a non-empty array/);
    expect(() => comms[0]!.group([0, 3])).toThrow(
      /`ranks\[1\]` passed to group\(\) must be an integer in \[0, 2\], got 3/,
    );
    expect(() => comms[0]!.group([0, 0])).toThrow(/`ranks` passed to group\(\) must be distinct ranks/);
    expect(() => comms[0]!.group([1, 2])).toThrow(
      /`ranks` passed to group\(\) must be a list that holds this rank \(0\)/,
    );
    expect(comms[0]!.group([0]).worldSize).toBe(1);
    expect(comms[0]!.group([0]).allReduce(Float32Array.of(4))).toEqual(Float32Array.of(4));
  });
});

describe('tensors at the edges', () => {
  it('all-reduces tensor data without leaking tensors', async () => {
    const { comms } = world(2);
    await expectNoLeaks(() => {
      const xs = comms.map((_, r) => tf.tensor1d([r, r + 1]));
      const sums = values(lockstep(comms.map((c, r) => c.beginAllReduce(xs[r]!.dataSync() as Float32Array))));
      tf.dispose(xs);
      expect(sums[0]).toEqual(Float32Array.of(1, 3));
    });
  });
});
