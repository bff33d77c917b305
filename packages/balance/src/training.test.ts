// End to end: the losses' gradients really balance a router trained on them alone.
import { disposeAll, expectNoLeaks, matMul, Rng, softmax, type Tensor2D, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { GlobalAuxLoss } from './global';
import { topKRows } from './internal/plan-fixture';
import { microBatchAuxLoss, routerZLoss } from './losses';
import { maxVio } from './metrics';

const [T, D, E, K] = [64, 8, 4, 1];

/**
 * A linear softmax router (logits = x W + b) whose bias starts strongly skewed towards expert 0,
 * trained by SGD on a balance loss alone. Returns MaxVio of the first step's counts and the mean over
 * the last 10 steps.
 */
function train(
  lossOf: (probsTE: Tensor2D, logitsTE: Tensor2D, countsE: Int32Array, micro: number) => tf.Scalar,
  options: { steps: number; microBatches: number; lr: number; afterStep?: () => void },
): { before: number; after: number } {
  const rng = new Rng(17);
  const wDE = tf.tidy(() => tf.variable(rng.normalTensor([D, E], 0, 0.1)));
  const bE = tf.tidy(() => tf.variable(tf.tensor1d([3, 0, 0, 0])));
  const xs = Array.from({ length: options.microBatches }, () => rng.normalTensor([T, D]) as Tensor2D);
  const vio: number[] = [];
  for (let s = 0; s < options.steps; s++) {
    const countsStep = new Int32Array(E);
    const acc: tf.Tensor[] = [];
    xs.forEach((xTD, m) => {
      const { grads, value } = tf.variableGrads(() => {
        const logitsTE = tf.add(matMul(xTD, wDE), bE) as Tensor2D;
        const probsTE = softmax(logitsTE) as Tensor2D;
        const countsE = new Int32Array(E);
        for (const row of topKRows(probsTE.dataSync(), T, E, K)) for (const e of row) countsE[e]! += 1;
        countsE.forEach((c, i) => {
          countsStep[i]! += c;
        });
        return lossOf(probsTE, logitsTE, countsE, m);
      }, [wDE, bE]);
      acc.push(grads[wDE.name]!, grads[bE.name]!);
      value.dispose();
    });
    vio.push(maxVio(countsStep));
    tf.tidy(() => {
      const n = options.microBatches;
      wDE.assign(tf.sub(wDE, tf.mul(tf.addN(acc.filter((_, i) => i % 2 === 0)), options.lr / n)));
      bE.assign(tf.sub(bE, tf.mul(tf.addN(acc.filter((_, i) => i % 2 === 1)), options.lr / n)));
    });
    disposeAll(acc);
    options.afterStep?.();
  }
  disposeAll(xs, wDE, bE);
  const tail = vio.slice(-10);
  return { before: vio[0]!, after: tail.reduce((a, b) => a + b, 0) / tail.length };
}

describe('training a router on a balance loss alone', () => {
  it('balances a collapsed router with the micro-batch loss (and z-loss alongside)', () => {
    const { before, after } = train(
      (p, l, c) =>
        tf.add(microBatchAuxLoss({ probsTE: p, countsE: c }, { alpha: 1 }), routerZLoss({ logitsTE: l })),
      { steps: 40, microBatches: 1, lr: 2 },
    );
    expect(before).toBeGreaterThan(2); // E - 1 = 3 when expert 0 takes everything
    expect(after).toBeLessThan(0.35);
  });

  it('balances it with the global-batch loss over 4 micro-batches', async () => {
    const gb = new GlobalAuxLoss({ numExperts: E, alpha: 1 });
    let result = { before: 0, after: 0 };
    await expectNoLeaks(() => {
      result = train(
        (p, _l, c, m) => {
          gb.accumulate(c, m);
          return gb.loss({ probsTE: p, countsE: c }, m);
        },
        { steps: 40, microBatches: 4, lr: 2, afterStep: () => gb.resetAfterStep() },
      );
    }, 'global-batch training');
    expect(result.before).toBeGreaterThan(2);
    expect(result.after).toBeLessThan(0.35);
  });

  it('leaves a collapsed router collapsed at alpha = 0', () => {
    const { after } = train((p, _l, c) => microBatchAuxLoss({ probsTE: p, countsE: c }, { alpha: 0 }), {
      steps: 10,
      microBatches: 1,
      lr: 2,
    });
    expect(after).toBeGreaterThan(2);
  });
});
