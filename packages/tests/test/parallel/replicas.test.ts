import { MoELayer } from '@switchyard/experts';
import {
  applyReplicatedExperts,
  createLocalCommunicator,
  expertParallelGroups,
  groupCommunicator,
  launch,
  ReplicatedExpertBank,
} from '@switchyard/parallel';
import { expectNoLeaks, isSwitchyardError, Rng, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { layerConfig } from './fixtures/moe.rank';
import { expectClose, reference } from './fixtures/reference';
import type {
  ReplicaArgs,
  ReplicaFailureArgs,
  ReplicaResult,
  ReplicaScenario,
} from './fixtures/replicas.rank';

const fixture = new URL('./fixtures/replicas.rank.ts', import.meta.url);
const E = layerConfig.experts.numExperts;

/** Checks every rank's result of one scenario against the single-rank layer on the global batch. */
function compare(results: ReplicaResult[], ref: ReturnType<typeof reference>, seed: number): void {
  expectClose(
    results.flatMap((r) => r.y),
    ref.y,
    'outputs',
  );
  expectClose(
    results.flatMap((r) => r.yAfter),
    ref.y,
    'outputs after the migration',
  );
  expectClose(
    results.flatMap((r) => r.dx),
    ref.dx,
    'input gradients',
  );
  for (const [name, got] of Object.entries(results[0]!.replicated)) {
    expectClose(got, ref.grads[name]!, `gradient of ${name}`);
    for (const r of results) expect(r.replicated[name]).toEqual(got);
  }
  // every slot holds its expert's whole gradient; the copies of one expert agree bit for bit
  let refSq = 0;
  for (const name of Object.keys(results[0]!.slots)) {
    const want = ref.grads[`experts.${name}`]!;
    const X = want.length / E;
    for (const v of want) refSq += v * v;
    const copies = new Map<number, number[]>();
    for (const r of results) {
      r.slotExperts.forEach((e, j) => {
        const got = r.slots[name]!.slice(j * X, (j + 1) * X);
        expectClose(
          got,
          want.slice(e * X, (e + 1) * X),
          `gradient of ${name}, expert ${e} (rank ${r.rank} slot ${j})`,
        );
        const seen = copies.get(e);
        if (seen) expect(got).toEqual(seen);
        else copies.set(e, got);
      });
    }
  }
  for (const r of results) expect(r.expertSqNorm / refSq).toBeCloseTo(1, 4);
  for (const r of results) expect(r.followerOk).toBe(true);
  const layer = new MoELayer(layerConfig, new Rng(seed));
  const w1 = Array.from(layer.experts.variables.w1!.dataSync());
  layer.dispose();
  for (const r of results) expect(r.gatheredW1).toEqual(w1);
}

describe('ReplicatedExpertBank', () => {
  const args = (scenarios: ReplicaScenario[]): ReplicaArgs => ({ seed: 11, tokens: 24, scenarios });

  it('on 4 ranks (2 groups of 2, data parallel across them), with and without expert copies, gives the layer outputs and gradients, and migrates', async () => {
    const a = args([
      { degree: 2, physToLog: [0, 1, 2, 3], next: [2, 3, 0, 1] },
      { degree: 2, physToLog: [0, 1, 0, 2, 3, 0], next: [3, 2, 1, 0, 1, 2] },
    ]);
    const ref = reference(a);
    const { results } = await launch<ReplicaArgs, ReplicaResult[]>({
      module: fixture,
      exportName: 'replicaSteps',
      ranks: 4,
      args: a,
      timeoutMs: 30_000,
    });
    for (let s = 0; s < a.scenarios.length; s++)
      compare(
        results.map((r) => r[s]!),
        ref,
        a.seed,
      );
    // rows stay inside a group: each group computes its own tokens' assignments (dropless top-2)
    const rows = results.map((r) => r[1]!.rowsComputed);
    expect(rows[0]! + rows[1]!).toBe(12 * 2);
    expect(rows[2]! + rows[3]!).toBe(12 * 2);
    // the migration gave each rank the slots of the new map, moving experts between the ranks of a group
    expect(results.map((r) => r[1]!.slotExpertsAfter)).toEqual([
      [3, 2, 1],
      [0, 1, 2],
      [3, 2, 1],
      [0, 1, 2],
    ]);
    expect(results.every((r) => r[1]!.valuesSent > 0)).toBe(true);
  });

  it('fails every rank, in its group and in the other, with an error naming a rank that died mid-step', async () => {
    const t0 = Date.now();
    const err = await launch<ReplicaFailureArgs>({
      module: fixture,
      exportName: 'replicaFailure',
      ranks: 4,
      args: { seed: 5, victim: 3, atStep: 2, steps: 50 },
      timeoutMs: 20_000,
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(Date.now() - t0).toBeLessThan(20_000); // well within the collective timeout
    expect(isSwitchyardError(err, 'RANK_FAILED')).toBe(true);
    const message = (err as Error).message;
    expect(message).toMatch(
      /^4 of 4 rank\(s\) failed:\n {2}rank 3: \[RANK_FAILED\] rank 3 exited with code 3/,
    );
    // each names the rank it waited on, and the chain of causes ends at the dead rank
    for (const r of [0, 1, 2])
      expect(message).toMatch(
        new RegExp(
          `rank ${r}: \\[RANK_FAILED\\] \\w+ #\\d+ of group \\[[\\d, ]+\\] on rank ${r} cannot complete: rank \\d failed.*rank 3 exited with code 3`,
        ),
      );
  });

  it('refuses maps that leave an expert out or do not fit the ranks, and unlike followers', () => {
    const layer = new MoELayer(layerConfig, new Rng(1));
    const comm = createLocalCommunicator();
    expect(() => new ReplicatedExpertBank(layer.experts, comm, [0, 1, 2, 2])).toThrow(
      /`physToLog` passed to ReplicatedExpertBank\(\) must be a map giving every expert a slot \(expert 3 has none\)/,
    );
    expect(() => new ReplicatedExpertBank(layer.experts, comm, [0, 1, 2, 7])).toThrow(
      /`physToLog\[3\]` passed to ReplicatedExpertBank\(\) must be an expert in \[0, 3\], got 7/,
    );
    const groups = expertParallelGroups(comm, 1);
    const [bank] = applyReplicatedExperts(layer, groups, { slots: 5 });
    expect(bank!.replicaCounts).toEqual([2, 1, 1, 1]); // uniform loads: the first expert gets the extra copy
    expect(() => bank!.migrate([0, 1, 2, 3])).toThrow(/a map of the bank's 5 slots, got 4/);
    const wrong = tf.variable(tf.zeros([2, 2, 2]));
    expect(() => bank!.migrate([0, 1, 2, 3, 3], [{ w1: wrong }])).toThrow(/followers \(w1\)/);
    expect(() => expertParallelGroups(comm, 2)).toThrow(
      /`degree` passed to expertParallelGroups\(\) must be/,
    );
    expect(() => groupCommunicator(comm, [[0], [0]])).toThrow(/rank 0 is in two groups/);
    wrong.dispose();
    layer.dispose();
  });

  it('releases everything it allocates', async () => {
    await expectNoLeaks(() => {
      const layer = new MoELayer(layerConfig, new Rng(2));
      const [bank] = applyReplicatedExperts(layer, expertParallelGroups(createLocalCommunicator(), 1), {
        slots: 6,
      });
      const x = tf.ones([5, layerConfig.dModel]) as tf.Tensor2D;
      const { value, grads } = tf.variableGrads(
        () => tf.sum(layer.forward(x, { training: true }).yTD) as tf.Scalar,
        Object.values(layer.variables),
      );
      const reduced = bank!.reduceGradients(
        Object.fromEntries(Object.entries(bank!.variables).map(([n, v]) => [n, grads[v.name]])),
      );
      bank!.squaredNormShare(reduced);
      bank!.migrate([3, 2, 1, 0, 0, 1]);
      bank!.gather().dispose();
      tf.dispose([x, value, grads, reduced]);
      layer.dispose();
    });
  });
});
