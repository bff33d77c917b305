// Block ranges: embedding, blocks [from, to) and the head as separate calls, as pipeline stages use them.
import { disposeRoutingPlan, type RoutingPlan } from '@switchyard/routing';
import { expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import { defineModelConfig } from './config';
import { MoETransformerLM } from './model';
import { presets } from './presets';

// 4 blocks: dense, MoE, dense, MoE; jitter and GShard-style randomness would show an RNG drift, so use a noisy router.
const config = defineModelConfig({
  ...presets.tiny,
  vocabSize: 64,
  numLayers: 4,
  moe: {
    ...presets.tiny.moe,
    every: 2,
    firstDense: 1,
    router: { type: 'topk', k: 2, jitterEps: 0.05 },
  },
});

function batch(seed: number, B: number, S: number): { x: Tensor2D; y: Tensor2D } {
  const rng = new Rng(seed);
  const draw = () =>
    tf.tensor2d(
      Array.from({ length: B * S }, () => rng.int(config.vocabSize)),
      [B, S],
      'int32',
    ) as Tensor2D;
  return { x: draw(), y: draw() };
}

const disposePlans = (plans: RoutingPlan[]) => {
  for (const p of plans) disposeRoutingPlan(p);
};

describe('MoETransformerLM block ranges', () => {
  const model = new MoETransformerLM(config, new Rng(11));
  afterAll(() => model.dispose());
  const N = config.numLayers;

  it('moeLayers() lists the MoE layers in block order', () => {
    const layers = model.moeLayers();
    expect(model.moeLayerIndices).toEqual([1, 3]);
    expect(layers).toHaveLength(2);
    const names = [...model.namedVariables()];
    expect(names.find(([n]) => n === 'layers.3.moe.experts.w1')![1]).toBe(layers[1]!.variables['experts.w1']);
  });

  it('embed -> blocks [0, 2) -> blocks [2, 4) -> head computes exactly what loss() and forward() compute', () => {
    const { x, y } = batch(1, 2, 8);
    const opts = { training: true, step: 3, totalSteps: 10 };
    const whole = model.loss(x, y, { ...opts, rng: new Rng(5) });
    const wholeFwd = model.forward(x, { ...opts, rng: new Rng(5) });

    const rng = new Rng(5);
    const range = { ...opts, rng, batch: 2, seqLen: 8 };
    const x0 = model.embed(x);
    const a = model.forwardBlocks(x0, 0, 2, range);
    const b = model.forwardBlocks(a.xTD, 2, N, range);
    const loss = model.headLoss(b.xTD, y);
    const logits = model.headLogits(b.xTD, 2, 8);

    expect(loss.dataSync()[0]).toBe(whole.loss.dataSync()[0]);
    expect(Array.from(logits.dataSync())).toEqual(Array.from(wholeFwd.logitsBSV.dataSync()));
    expect(a.plans).toHaveLength(1);
    expect(b.plans).toHaveLength(1);
    const parts = [...a.plans, ...b.plans];
    parts.forEach((p, i) => {
      expect(Array.from(p.expertIdx)).toEqual(Array.from(whole.plans[i]!.expertIdx));
    });
    // an empty range passes the stream through
    const same = model.forwardBlocks(b.xTD, N, N, range);
    expect(same.plans).toHaveLength(0);
    expect(Array.from(same.xTD.dataSync())).toEqual(Array.from(b.xTD.dataSync()));

    tf.dispose([x, y, whole.loss, wholeFwd.logitsBSV, x0, a.xTD, b.xTD, loss, logits, same.xTD]);
    disposePlans([...whole.plans, ...wholeFwd.plans, ...parts]);
  });

  it('a model cut into two stages gets the gradients of the whole model', () => {
    const { x, y } = batch(2, 2, 6);
    const opts = { training: false, batch: 2, seqLen: 6 };
    const vars = model.namedVariables();
    const { grads: want } = tf.variableGrads(() => {
      const r = model.loss(x, y, { training: false });
      disposePlans(r.plans);
      return r.loss;
    });

    // stage 2: blocks [2, 4) and the head, from a received activation
    const x2 = tf.tidy(() => model.forwardBlocks(model.embed(x), 0, 2, opts).xTD);
    const x2v = tf.variable(x2, true);
    const stage2 = tf.variableGrads(() => {
      const r = model.forwardBlocks(x2v, 2, 4, opts);
      disposePlans(r.plans);
      return model.headLoss(r.xTD, y);
    });
    // stage 1: embedding and blocks [0, 2), backpropagating the gradient stage 2 sent back
    const dx2 = stage2.grads[x2v.name]!;
    const stage1 = tf.variableGrads(() => {
      const r = model.forwardBlocks(model.embed(x), 0, 2, opts);
      disposePlans(r.plans);
      return tf.sum(tf.mul(r.xTD, dx2)) as tf.Scalar;
    });

    let worst = 0;
    for (const [name, v] of vars) {
      const w = want[v.name]!;
      const g1 = stage1.grads[v.name];
      const g2 = stage2.grads[v.name];
      // the tied embedding gets gradient from both stages (input in stage 1, head in stage 2)
      const got = tf.tidy(() => (g1 && g2 ? tf.add(g1, g2) : (g1 ?? g2)!));
      const err = tf.tidy(
        () => tf.max(tf.abs(tf.sub(got, w))).dataSync()[0]! / (1e-6 + tf.max(tf.abs(w)).dataSync()[0]!),
      );
      worst = Math.max(worst, err);
      expect(err, name).toBeLessThan(1e-4);
      got.dispose();
    }
    expect(worst).toBeLessThan(1e-4);
    tf.dispose([x, y, x2, x2v, want, stage1.value, stage1.grads, stage2.value, stage2.grads]);
  });

  it('rejects bad ranges and streams with clear messages', () => {
    const { x, y } = batch(3, 1, 4);
    const x0 = model.embed(x);
    const opts = { training: false, batch: 1, seqLen: 4 };
    expect(() => model.forwardBlocks(x0, 3, 2, opts)).toThrow(
      /`to` passed to MoETransformerLM.forwardBlocks\(\) must be an integer in \[3, 4\], got 2/,
    );
    expect(() => model.forwardBlocks(x0, 0, 5, opts)).toThrow(
      /`to` passed to MoETransformerLM.forwardBlocks\(\)/,
    );
    expect(() => model.forwardBlocks(x0, 0, 2, { ...opts, seqLen: 5 })).toThrow(
      /`xTD` passed to MoETransformerLM.forwardBlocks\(\) must have shape \[T=5, D=32\], got \[4, 32\]/,
    );
    expect(() => model.headLoss(x0, tf.zeros([1, 4], 'int32') as Tensor2D)).not.toThrow();
    const short = tf.zeros([1, 2], 'int32') as Tensor2D;
    expect(() => model.headLoss(x0, short)).toThrow(
      /`xTD` passed to MoETransformerLM.headLoss\(\) must have shape \[T=2, D=32\], got \[4, 32\]/,
    );
    short.dispose();
    tf.dispose([x, y, x0]);
  });

  it('asks for token ids when a router routes on them', () => {
    const hashed = new MoETransformerLM(
      defineModelConfig({
        ...config,
        moe: { ...config.moe, router: { type: 'balanced', assignment: 'hash', k: 2 } },
      }),
      new Rng(1),
    );
    const { x } = batch(4, 1, 4);
    const x0 = hashed.embed(x);
    expect(() => hashed.forwardBlocks(x0, 0, 2, { training: false, batch: 1, seqLen: 4 })).toThrow(
      /`opts.tokenIds` passed to MoETransformerLM.forwardBlocks\(\) must be an Int32Array of the batch's 4 token ids/,
    );
    const ids = x.dataSync() as Int32Array;
    const r = hashed.forwardBlocks(x0, 0, 4, { training: false, batch: 1, seqLen: 4, tokenIds: ids });
    const whole = hashed.forward(x, { training: false });
    expect(Array.from(hashed.headLogits(r.xTD, 1, 4).dataSync())).toEqual(
      Array.from(whole.logitsBSV.dataSync()),
    );
    disposePlans([...r.plans, ...whole.plans]);
    tf.dispose([x, x0, r.xTD, whole.logitsBSV]);
    hashed.dispose();
  });

  it('releases everything it allocates', async () => {
    // the model keeps its RoPE tables and mask per sequence length: create them before counting
    const warm = batch(5, 2, 4);
    tf.tidy(() => {
      model.forwardBlocks(model.embed(warm.x), 0, 1, { training: false, batch: 2, seqLen: 4 });
    });
    tf.dispose([warm.x, warm.y]);
    await expectNoLeaks(() => {
      const { x, y } = batch(5, 2, 4);
      const opts = { training: true, rng: new Rng(1), batch: 2, seqLen: 4 };
      const { value, grads } = tf.variableGrads(() => {
        const a = model.forwardBlocks(model.embed(x), 0, 2, opts);
        const b = model.forwardBlocks(a.xTD, 2, 4, opts);
        disposePlans([...a.plans, ...b.plans]);
        return model.headLoss(b.xTD, y);
      });
      tf.dispose([x, y, value, grads]);
    });
  });
});
