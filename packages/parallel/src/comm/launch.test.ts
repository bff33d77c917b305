import { isSwitchyardError, type SwitchyardError } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { type CollectivesArgs, type FailureArgs, pattern } from '../../test/fixtures/collectives.rank';
import { launch, parseLaunchArgs, parseMaster } from './launch';

const fixture = new URL('../../test/fixtures/collectives.rank.ts', import.meta.url);

async function failure(p: Promise<unknown>): Promise<SwitchyardError> {
  try {
    await p;
  } catch (e) {
    return e as SwitchyardError;
  }
  throw new Error('expected the launch to fail');
}

function digest(buf: Float32Array | Int32Array): number[] {
  let s = 0;
  for (const v of buf) s += v;
  return [buf.length, s, ...Array.from(buf.subarray(0, 4))];
}

describe('launch on worker ranks', () => {
  it('runs every collective on 3 worker ranks (one-round and two-round all-reduce)', async () => {
    const sizes = [1, 5, 70_001];
    const { results, ranks, worldSize } = await launch<CollectivesArgs, Record<string, unknown>>({
      module: fixture,
      ranks: 3,
      args: { sizes },
      timeoutMs: 30_000,
    });
    expect(ranks).toEqual([0, 1, 2]);
    expect(worldSize).toBe(3);
    for (const n of sizes) {
      const inputs = [0, 1, 2].map((r) => pattern(r, n, 1));
      const sum = inputs[0]!.map((v, i) => v + inputs[1]![i]! + inputs[2]![i]!);
      const max = inputs[0]!.map((v, i) => Math.max(v, inputs[1]![i]!, inputs[2]![i]!));
      const isum = Int32Array.from(sum.keys(), (i) => inputs.reduce((s, x) => s + Math.round(x[i]! * 2), 0));
      for (const r of results) {
        expect(r[`sum${n}`]).toEqual(digest(sum));
        expect(r[`max${n}`]).toEqual(digest(max));
        expect(r[`isum${n}`]).toEqual(digest(isum));
        expect(r[`mean${n}`]).toEqual(digest(sum.map((v) => v / 3)));
      }
    }
    results.forEach((r, rank) => {
      expect(r.transport).toBe('worker');
      expect(r.gather).toEqual([[0], [100, 101], [200, 201, 202]]);
      // rank i sent i + rank values "10 i + rank" to this rank
      expect(r.a2a).toEqual([0, 1, 2].map((i) => Array(i + rank).fill(i * 10 + rank)));
      expect(r.bcast).toEqual([
        [0.25, 7],
        [1.25, 7],
        [2.25, 7],
      ]);
      expect(r.collectives).toBe(sizes.length * 4 + 6);
      expect(r.ring).toEqual(digest(pattern((rank + 2) % 3, 70_001, 3)));
    });
    const pair = pattern(0, 5, 2).map((v, i) => v + pattern(2, 5, 2)[i]!);
    expect([results[0]!.pair, results[1]!.pair, results[2]!.pair]).toEqual([
      digest(pair),
      undefined,
      digest(pair),
    ]);
    // group communicators over the partition {0, 2}, {1}: each group's collectives among its own ranks
    expect(results.map((r) => r.group)).toEqual([
      {
        rank: 0,
        size: 2,
        sum: [3, 2],
        mean: [1],
        max: [2],
        gather: [[0], [2]],
        a2a: [[0], [20]],
        bcast: [9],
        collectives: 7,
      },
      {
        rank: 0,
        size: 1,
        sum: [1.5, 1],
        mean: [1],
        max: [1],
        gather: [[1]],
        a2a: [[10]],
        bcast: [9],
        collectives: 7,
      },
      {
        rank: 1,
        size: 2,
        sum: [3, 2],
        mean: [1],
        max: [2],
        gather: [[0], [2]],
        a2a: [[1], [21]],
        bcast: [9],
        collectives: 7,
      },
    ]);
  });

  it('fails every rank within the timeout, naming the dead rank, when a rank exits mid-step', async () => {
    const t0 = Date.now();
    const err = await failure(
      launch<FailureArgs>({
        module: fixture,
        exportName: 'misbehave',
        ranks: 3,
        args: { victim: 1, atStep: 3, how: 'exit', steps: 1000 },
        timeoutMs: 20_000,
      }),
    );
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(isSwitchyardError(err, 'RANK_FAILED')).toBe(true);
    expect(err.message).toMatch(
      /^3 of 3 rank\(s\) failed:\n {2}rank 1: \[RANK_FAILED\] rank 1 exited with code 3 before its rank function returned/,
    );
    expect(err.message).toMatch(
      /rank 0: \[RANK_FAILED\] allReduce #3 on rank 0 cannot complete: rank 1 failed \(rank 1 exited with code 3/,
    );
    expect(err.message).toMatch(
      /rank 2: \[RANK_FAILED\] allReduce #3 on rank 2 cannot complete: rank 1 failed/,
    );
  });

  it('times out, naming the stalled rank, and terminates it', async () => {
    const t0 = Date.now();
    const err = await failure(
      launch<FailureArgs>({
        module: fixture,
        exportName: 'misbehave',
        ranks: 2,
        args: { victim: 1, atStep: 2, how: 'stall', steps: 1000 },
        timeoutMs: 1500,
        shutdownGraceMs: 500,
      }),
    );
    const elapsed = Date.now() - t0;
    expect(err.message).toMatch(
      /rank 0: \[TIMEOUT\] allReduce #2 on rank 0 timed out after 1500 ms waiting for rank 1\n/,
    );
    expect(err.message).toMatch(
      /rank 1: \[RANK_FAILED\] rank 1 was terminated by the launcher 500 ms after rank 0 failed/,
    );
    expect(elapsed).toBeLessThan(15_000);
  });

  it('reports a rank function that throws, and a collective mismatch', async () => {
    const thrown = await failure(
      launch<FailureArgs>({
        module: fixture,
        exportName: 'misbehave',
        ranks: 2,
        args: { victim: 0, atStep: 1, how: 'throw', steps: 5 },
      }),
    );
    expect(thrown.message).toMatch(/rank 0: rank 0 hit a bad batch at step 1\n/);
    expect(thrown.message).toMatch(
      /rank 1: \[RANK_FAILED\] allReduce #1 on rank 1 cannot complete: rank 0 failed \(rank 0 hit a bad batch/,
    );
    expect(thrown.details.failedRanks).toEqual([0, 1]);
  });

  it('runs one rank in the calling thread by default', async () => {
    const { results } = await launch<CollectivesArgs, Record<string, unknown>>({
      module: fixture,
      args: { sizes: [3] },
    });
    expect(results[0]!.transport).toBe('local');
    expect(results[0]!.sum3).toEqual(digest(pattern(0, 3, 1)));
  });

  it('checks its options', async () => {
    await expect(launch({ module: fixture, ranks: 0 })).rejects.toThrow(
      /`ranks` passed to launch\(\) must be an integer in \[1, 1024\], got 0/,
    );
    await expect(launch({ module: fixture, nnodes: 2 })).rejects.toThrow(
      /`master` passed to launch\(\) must be a rendezvous address host:port when nnodes > 1/,
    );
    await expect(launch({ module: fixture, exportName: 'nope' })).rejects.toThrow(
      /must be a module whose export `nope` is a rank function/,
    );
  });
});

describe('parseLaunchArgs', () => {
  it('takes the launcher flags out of an argument list', () => {
    expect(
      parseLaunchArgs([
        '--ranks',
        '2',
        '--preset',
        'small',
        '--nnodes=2',
        '--node-rank',
        '1',
        '--master',
        '10.0.0.1:29500',
      ]),
    ).toEqual({
      config: { ranks: 2, nnodes: 2, nodeRank: 1, master: '10.0.0.1:29500' },
      rest: ['--preset', 'small'],
    });
    expect(parseLaunchArgs(['--collective-timeout', '5000']).config).toEqual({ timeoutMs: 5000 });
  });

  it('rejects bad values', () => {
    expect(() => parseLaunchArgs(['--ranks', 'two'])).toThrow(
      /`--ranks` passed to parseLaunchArgs\(\) must be an integer >= 1, got "two"/,
    );
    expect(() => parseLaunchArgs(['--ranks'])).toThrow(
      /`--ranks` passed to parseLaunchArgs\(\) must be followed by a value/,
    );
    expect(() => parseLaunchArgs(['--master', 'nohost'])).toThrow(
      /`master` passed to launch\(\) must be an address host:port/,
    );
    expect(parseMaster('[::1]:29500')).toEqual({ host: '::1', port: 29500 });
  });
});
