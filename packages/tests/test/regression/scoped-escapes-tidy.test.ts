// Regression: results of `scoped()` were marked kept, so balance losses computed inside a training
// step (an enclosing tf.variableGrads / tf.tidy) escaped it and leaked one tensor per call.
import { LossFreeBalancer, microBatchAuxLoss, routerZLoss } from '@switchyard/balance';
import { MoELayer } from '@switchyard/experts';
import { liveTensors, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';

const D = 8;
const E = 4;

function makeLayer(): MoELayer {
  return new MoELayer(
    {
      dModel: D,
      router: { type: 'topk', numExperts: E, k: 2, dModel: D },
      experts: { numExperts: E, dModel: D, dFF: 12, activation: 'swiglu' },
    },
    new Rng(1),
  );
}

describe('a training step of router + experts + balance losses', () => {
  it('leaks no tensor across optimizer steps and lowers the loss', () => {
    const layer = makeLayer();
    const rng = new Rng(2);
    const xTD = rng.normalTensor([16, D]) as Tensor2D;
    const targetTD = rng.normalTensor([16, D]) as Tensor2D;
    const optimizer = tf.train.adam(0.02);
    const balancer = new LossFreeBalancer({ numLayers: 1, numExperts: E });
    const vars = Object.values(layer.variables);
    const losses: number[] = [];
    let baseline = 0;
    for (let step = 0; step < 12; step++) {
      if (step === 1) baseline = liveTensors();
      const lossValue = optimizer.minimize(
        () => {
          const { yTD, plan } = layer.forward(xTD, { training: true, rng, selectionBiasE: balancer.bias(0) });
          balancer.observe(0, plan.countsE);
          const mse = tf.mean(tf.square(tf.sub(yTD, targetTD)));
          return tf.addN([mse, microBatchAuxLoss(plan), routerZLoss(plan)]) as tf.Scalar;
        },
        true,
        vars,
      );
      balancer.step();
      losses.push(lossValue!.dataSync()[0]!);
      lossValue!.dispose();
      if (step > 0) expect(liveTensors()).toBe(baseline);
    }
    expect(losses.at(-1)!).toBeLessThan(losses[0]!);
    tf.dispose([xTD, targetTD]);
    optimizer.dispose();
    layer.dispose();
  });
});
