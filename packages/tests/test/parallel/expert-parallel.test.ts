import { MoELayer } from '@switchyard/experts';
import { MoETransformerLM, presets } from '@switchyard/model';
import {
  applyExpertParallel,
  type Communicator,
  createLocalCommunicator,
  ExpertParallelBank,
  isShardedVariable,
  launch,
  withFullExperts,
} from '@switchyard/parallel';
import { expectNoLeaks, Rng, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import {
  type LayerStepArgs,
  type LayerStepResult,
  layerConfig,
  type TrainArgs,
  type TrainResult,
  train,
} from './fixtures/moe.rank';
import { expectClose, reference } from './fixtures/reference';

const fixture = new URL('./fixtures/moe.rank.ts', import.meta.url);
const onCpu = process.env.SWITCHYARD_BACKEND === 'cpu';

/** Compares per-rank results of layerStep with the single-rank reference. */
function compare(results: LayerStepResult[], ref: ReturnType<typeof reference>): void {
  expectClose(
    results.flatMap((r) => r.y),
    ref.y,
    'outputs',
  );
  expectClose(
    results.flatMap((r) => r.dx),
    ref.dx,
    'input gradients',
  );
  for (const [name, want] of Object.entries(ref.grads)) {
    // expert shards concatenate along the expert axis in rank order; replicated grads agree on every rank
    const got = name.startsWith('experts.')
      ? results.flatMap((r) => r.grads[name]!)
      : results[0]!.grads[name]!;
    expectClose(got, want, `gradient of ${name}`);
    if (!name.startsWith('experts.')) for (const r of results) expect(r.grads[name]).toEqual(got);
  }
}

describe('ExpertParallelBank', () => {
  const args: LayerStepArgs = { seed: 7, tokens: 24 };

  it('on 2 worker ranks (2 experts each, tokens split) gives the outputs and gradients of one MoE layer', async () => {
    const ref = reference(args);
    const { results } = await launch<LayerStepArgs, LayerStepResult>({
      module: fixture,
      exportName: 'layerStep',
      ranks: 2,
      args,
      timeoutMs: 30_000,
    });
    expect(results.map((r) => r.firstExpert)).toEqual([0, 2]);
    compare(results, ref);
    // every token routed somewhere: local counts add up to the global T * K
    expect(results.flatMap((r) => r.counts).reduce((a, b) => a + b, 0)).toBe(args.tokens * 2);
  });

  it('on 2 worker ranks, one of them with no tokens, still exchanges and matches the layer', async () => {
    const one: LayerStepArgs = { seed: 7, tokens: 1 }; // rank 1 gets an empty batch
    const ref = reference(one);
    const { results } = await launch<LayerStepArgs, LayerStepResult>({
      module: fixture,
      exportName: 'layerStep',
      ranks: 2,
      args: one,
      timeoutMs: 30_000,
    });
    expect(results[1]!.y).toEqual([]);
    compare(results, ref);
  });

  it('on one rank in-process equals the layer', async () => {
    const ref = reference(args);
    const { results } = await launch<LayerStepArgs, LayerStepResult>({
      module: fixture,
      exportName: 'layerStep',
      args,
    });
    compare(results, ref);
  });

  it('rejects a world size that does not divide the experts', () => {
    const layer = new MoELayer(layerConfig, new Rng(1));
    const comm3 = { rank: 0, worldSize: 3, allToAllV: () => [] } as unknown as Communicator;
    expect(() => new ExpertParallelBank(layer.experts, comm3)).toThrow(
      /`comm` passed to ExpertParallelBank\(\) must be a communicator whose world size divides numExperts \(4\), got "world size 3"/,
    );
    layer.dispose();
  });

  it('releases everything it allocates', async () => {
    await expectNoLeaks(() => {
      const layer = new MoELayer(layerConfig, new Rng(2));
      applyExpertParallel(layer, createLocalCommunicator());
      const x = tf.ones([5, layerConfig.dModel]) as tf.Tensor2D;
      const { value, grads } = tf.variableGrads(
        () => tf.sum(layer.forward(x, { training: true }).yTD) as tf.Scalar,
        Object.values(layer.variables),
      );
      tf.dispose([x, value, grads]);
      layer.dispose();
    });
  });
});

describe('applyExpertParallel', () => {
  it('makes a whole model expert-parallel through its banks without changing what it computes', async () => {
    const config = { ...presets.tiny, vocabSize: 32 };
    const plain = new MoETransformerLM(config, new Rng(4));
    const model = new MoETransformerLM(config, new Rng(4));
    const eps = applyExpertParallel(model, createLocalCommunicator());
    expect(eps).toHaveLength(model.moeLayerIndices.length);
    const w1 = [...model.namedVariables()].find(([n]) => n.endsWith('moe.experts.w1'))!;
    expect(isShardedVariable(w1[1])).toBe(true);
    const x = tf.tensor2d([[1, 2, 3, 4]], undefined, 'int32');
    const y = tf.tensor2d([[2, 3, 4, 5]], undefined, 'int32');
    const a = tf.tidy(() => plain.loss(x, y, { training: false }).loss.dataSync()[0]!);
    const b = tf.tidy(() => model.loss(x, y, { training: false }).loss.dataSync()[0]!);
    expect(b).toBeCloseTo(a, 5);
    const shape = await withFullExperts(model, () => model.namedVariables().get(w1[0])!.shape);
    expect(shape).toEqual([config.moe.experts.numExperts, config.dModel, config.moe.experts.dFF]);
    expect(model.namedVariables().get(w1[0])).toBe(w1[1]); // the shard is back
    expect(model.moeLayers().map((l) => l.experts)).toEqual(eps);
    await expect(withFullExperts({} as MoETransformerLM, () => 0)).rejects.toThrow(
      /`target` passed to withFullExperts\(\) must be a model with moeLayers\(\) or an MoELayer/,
    );
    tf.dispose([x, y]);
    plain.dispose();
    model.dispose();
  });
});

describe('data + expert parallel training', () => {
  const args: TrainArgs = { seed: 3, steps: 50, batch: 8, seqLen: 16, expertParallel: true, lr: 1e-2 };

  it.skipIf(onCpu)(
    'on 2 worker ranks follows the 1-rank loss curve for the same seed and global batch',
    async () => {
      const single = await train({
        rank: 0,
        worldSize: 1,
        localRank: 0,
        localWorldSize: 1,
        nodeRank: 0,
        nnodes: 1,
        peers: [],
        comm: createLocalCommunicator(),
        args: { ...args, expertParallel: false },
        backend: (await import('@switchyard/tensor')).backendInfo(),
      });
      const { results } = await launch<TrainArgs, TrainResult>({
        module: fixture,
        exportName: 'train',
        ranks: 2,
        args,
        timeoutMs: 60_000,
      });
      expect(results[0]!.losses).toEqual(results[1]!.losses); // every rank reports the same all-reduced loss
      const one = single.losses;
      const two = results[0]!.losses;
      expect(two).toHaveLength(50);
      let worst = 0;
      for (let s = 0; s < 50; s++) worst = Math.max(worst, Math.abs(two[s]! - one[s]!));
      console.log(
        `loss step 0 ${one[0]!.toFixed(4)} -> step 49 ${one[49]!.toFixed(4)}; worst |2-rank - 1-rank| ${worst.toExponential(2)}`,
      );
      expect(one[49]!).toBeLessThan(one[0]! * 0.7); // it learns
      expect(worst).toBeLessThan(2e-3);
      // the trained experts, gathered from both ranks' shards, match the 1-rank model's
      for (const r of results) {
        expect(r.expertW1.shape).toEqual(single.expertW1.shape);
        expectClose(r.expertW1.values, single.expertW1.values, 'trained experts.w1', 1e-2);
      }
    },
  );
});
