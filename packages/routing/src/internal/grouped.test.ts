import { checkGradients, expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { groupAssignments, groupedLogits } from './grouped';

// T = 5 tokens, 2 groups per token out of G = 3, M = 2 experts per group (E = 6), D = 4.
const tokenOf = Int32Array.of(0, 0, 1, 1, 2, 2, 3, 3, 4, 4);
const groupOf = Int32Array.of(0, 2, 1, 0, 2, 1, 0, 1, 2, 0);
const G = 3;

describe('groupedLogits', () => {
  it('sorts assignments by group, stably', () => {
    const asg = groupAssignments(tokenOf, groupOf, G);
    expect(Array.from(asg.offsets)).toEqual([0, 4, 7, 10]);
    expect(Array.from(asg.order)).toEqual([0, 3, 6, 9, 2, 5, 7, 1, 4, 8]);
  });

  for (const impl of ['host', 'ops'] as const) {
    it(`${impl}: out[a] = x[token] @ W[:, group columns], with exact gradients`, () => {
      const rng = new Rng(3);
      const x = rng.normalTensor([5, 4]) as Tensor2D;
      const w = rng.normalTensor([4, 6]) as Tensor2D;
      const asg = groupAssignments(tokenOf, groupOf, G);
      const out = groupedLogits(x, w, asg, G, impl);
      const full = tf.matMul(x, w).arraySync() as number[][];
      const got = out.arraySync() as number[][];
      for (let a = 0; a < 10; a++) {
        for (let i = 0; i < 2; i++)
          expect(got[a]![i]!).toBeCloseTo(full[tokenOf[a]!]![groupOf[a]! * 2 + i]!, 5);
      }
      checkGradients((xi, wi) => groupedLogits(xi as Tensor2D, wi as Tensor2D, asg, G, impl), [x, w]);
      tf.dispose([x, w, out]);
    });
  }

  it('handles empty groups and leaves no tensors behind', async () => {
    const x = new Rng(1).normalTensor([2, 3]) as Tensor2D;
    const w = new Rng(2).normalTensor([3, 8]) as Tensor2D;
    const asg = groupAssignments(Int32Array.of(0, 1), Int32Array.of(3, 3), 4);
    for (const impl of ['host', 'ops'] as const) {
      await expectNoLeaks(() =>
        tf.tidy(() =>
          tf.grads((xi: tf.Tensor, wi: tf.Tensor) =>
            tf.sum(groupedLogits(xi as Tensor2D, wi as Tensor2D, asg, 4, impl)),
          )([x, w]),
        ),
      );
    }
    tf.dispose([x, w]);
  });
});
