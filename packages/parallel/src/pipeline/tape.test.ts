// Recorded forwards: B, and Bi followed by W, give tfjs's own gradients (bit for bit) without
// running the forward again; Bi releases what W does not need.
import { defineModelConfig, MoETransformerLM, presets } from '@switchyard/model';
import { disposeRoutingPlan } from '@switchyard/routing';
import { expectNoLeaks, Rng, type Tensor, type Tensor2D, tf } from '@switchyard/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import { recordForward } from './tape';

const config = defineModelConfig({
  ...presets.tiny,
  vocabSize: 64,
  numLayers: 3,
  moe: { ...presets.tiny.moe, every: 1, firstDense: 1 },
});

function tokens(seed: number, B: number, S: number): Tensor2D {
  const rng = new Rng(seed);
  return tf.tensor2d(
    Array.from({ length: B * S }, () => rng.int(config.vocabSize)),
    [B, S],
    'int32',
  ) as Tensor2D;
}

function bits(t: Tensor): Buffer {
  return Buffer.from((t.dataSync() as Float32Array).buffer);
}

describe('recordForward', () => {
  const model = new MoETransformerLM(config, new Rng(3));
  const vars = [...model.namedVariables().values()];
  afterAll(() => model.dispose());

  /** A middle stage: blocks [1, 3) on a residual stream, plus a head loss on the last rows as an extra output. */
  function stage(xTD: Tensor2D, targets: Tensor2D) {
    const r = model.forwardBlocks(xTD, 1, 3, { training: true, rng: new Rng(9), batch: 2, seqLen: 5 });
    for (const p of r.plans) disposeRoutingPlan(p);
    return { y: r.xTD, aux: tf.mul(model.headLoss(r.xTD, targets), 0.1) as tf.Scalar };
  }

  it('Bi then W, and B, equal tf.grads of the same function bit for bit', () => {
    const x0 = tf.tidy(
      () =>
        model.forwardBlocks(model.embed(tokens(1, 2, 5)), 0, 1, { training: false, batch: 2, seqLen: 5 }).xTD,
    );
    const targets = tokens(2, 2, 5);
    const dy = tf.randomNormal(x0.shape, 0, 1, 'float32', 4) as Tensor2D;
    // tfjs: the objective sum(y * dy) + aux, differentiated with respect to x and every variable
    const objective = (x: Tensor2D) => {
      const { y, aux } = stage(x, targets);
      return tf.add(tf.sum(tf.mul(y, dy)), aux) as tf.Scalar;
    };
    const [wantDx] = tf.grads((x: Tensor) => objective(x as Tensor2D))([x0]);
    const wantW = tf.variableGrads(() => objective(x0), vars);
    const want = [wantDx!, ...vars.map((v) => wantW.grads[v.name] ?? tf.zerosLike(v))];
    wantW.value.dispose();

    for (const split of [true, false]) {
      const before = tf.memory().numTensors;
      const { result, tape } = recordForward(() => stage(x0, targets));
      expect(tape.size).toBeGreaterThan(50);
      const seeds = [
        { output: result.y, dy },
        { output: result.aux, dy: tf.onesLike(result.aux) },
      ];
      let dx: Tensor;
      let dW: Map<tf.Variable, Tensor>;
      if (split) {
        const held = tf.memory().numTensors;
        [dx] = tape.backwardInputs(seeds, [x0]) as [Tensor];
        // Bi released the saved activations W does not read
        expect(tf.memory().numTensors).toBeLessThan(held);
        expect(tape.state).toBe('input-done');
        dW = tape.backwardWeights();
      } else {
        const out = tape.backward(seeds, [x0]);
        dx = out.inputGrads[0]!;
        dW = out.weightGrads;
      }
      expect(tape.state).toBe('done');
      expect(bits(dx).equals(bits(want[0]!))).toBe(true);
      // blocks 1 and 2 and the final norm and tied embedding (head) have gradients; block 0 none
      const names = new Map([...model.namedVariables()].map(([n, v]) => [v, n]));
      const got = [...dW.keys()].map((v) => names.get(v as tf.Variable)!).sort();
      expect(got.some((n) => n.startsWith('layers.0.'))).toBe(false);
      expect(got).toContain('layers.2.moe.experts.w1');
      expect(got).toContain('embed_tokens');
      vars.forEach((v, i) => {
        const g = dW.get(v);
        const w = want[i + 1]!;
        if (g === undefined)
          expect(
            tf.tidy(() => tf.max(tf.abs(w)).dataSync()[0]),
            names.get(v),
          ).toBe(0);
        else expect(bits(g).equals(bits(w)), names.get(v)).toBe(true);
      });
      tf.dispose([dx, ...dW.values(), result.y, result.aux, seeds[1]!.dy]);
      expect(tf.memory().numTensors).toBe(before);
    }
    tf.dispose([x0, targets, dy, ...want]);
  });

  it('records nothing outside the call and refuses nesting and out-of-order calls', () => {
    const x = tf.tensor2d([[1, 2]]);
    const w = tf.variable(tf.tensor2d([[1], [3]]));
    expect(() => tf.grads(() => recordForward(() => tf.sum(tf.matMul(x, w))).result)([x])).toThrow(
      /recordForward\(\) cannot run inside another gradient computation/,
    );
    const { result, tape } = recordForward(() => tf.matMul(x, w));
    expect(() => tape.backwardWeights()).toThrow(
      /ForwardTape.backwardWeights\(\) needs a tape in state 'input-done', this one is 'recorded'/,
    );
    expect(() => tape.backwardInputs([{ output: result, dy: tf.ones([2]) }], [x])).toThrow(
      /must be float32 \[1, 1\] like its output, got float32 \[2\]/,
    );
    tape.dispose();
    expect(() => tape.backwardInputs([], [x])).toThrow(/its backward already ran, or it was disposed/);
    // an input the output does not depend on gets no gradient; a plain tf.grads still works after
    const other = recordForward(() => tf.mul(w, 2));
    const [none] = other.tape.backwardInputs([{ output: other.result, dy: tf.onesLike(other.result) }], [x]);
    expect(none).toBeUndefined();
    const dW = other.tape.backwardWeights();
    expect(Array.from(dW.get(w)!.dataSync())).toEqual([2, 2]);
    const [dx] = tf.grads((a: Tensor) => tf.sum(tf.matMul(a, w)))([x]);
    expect(Array.from(dx!.dataSync())).toEqual([1, 3]);
    tf.dispose([x, w, result, other.result, ...dW.values(), dx!]);
  });

  it('releases everything, whether the backward runs or the tape is disposed', async () => {
    const x0 = tf.tidy(() => model.embed(tokens(5, 2, 5)));
    const targets = tokens(6, 2, 5);
    stage(x0, targets).y.dispose(); // warm the model's cached tables
    await expectNoLeaks(() => {
      const a = recordForward(() => stage(x0, targets));
      const seeds = [
        { output: a.result.y, dy: tf.onesLike(a.result.y) },
        { output: a.result.aux, dy: tf.onesLike(a.result.aux) },
      ];
      const [dx] = a.tape.backwardInputs(seeds, [x0]);
      tf.dispose([
        dx!,
        ...a.tape.backwardWeights().values(),
        a.result.y,
        a.result.aux,
        ...seeds.map((s) => s.dy),
      ]);
      const b = recordForward(() => stage(x0, targets));
      b.tape.dispose();
      tf.dispose([b.result.y, b.result.aux]);
      expect(() =>
        recordForward(() => {
          tf.matMul(x0, tf.zeros([32, 32]));
          throw new Error('boom');
        }),
      ).toThrow(/boom/);
    });
    tf.dispose([x0, targets]);
  });
});
