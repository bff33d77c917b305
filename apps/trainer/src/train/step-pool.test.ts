/**
 * Full-step pooling of the global balance loss (`balance.globalPool: 'step'`): the routing-only
 * prepass routes exactly what the training passes route (router jitter on), every micro-batch's loss
 * takes f from the whole step's counts, and the gradient flows through the mean scores P only.
 */
import { createLocalCommunicator } from '@switchyard/parallel';
import type { RoutingPlan } from '@switchyard/routing';
import { expectNoLeaks, Rng, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { tinyModel, TINY_VOCAB as V } from '../../test/tiny-model';
import { Batcher } from '../data/batcher';
import { BalanceController } from './balance';
import { balanceController, optimizerStep } from './setup';
import { TrainStep } from './step';

const ALPHA = 0.05;

/** A tiny model (one MoE layer after one dense block, 4 experts top-2, router jitter on) and its TrainStep. */
function tinyStep(globalPool: 'step' | 'cumulative') {
  const { config, model, shape } = tinyModel({ type: 'topk', k: 2, jitterEps: 0.05 }, 5, {
    train: { seqLen: 8, microBatchSize: 2, gradAccum: 3, steps: 4, warmupSteps: 1, lr: 1e-2 },
    balance: { method: 'global', alpha: ALPHA, globalPool },
    data: { batching: 'domain' },
  });
  const { numMoELayers: L, numExperts: E, k } = shape;
  const comm = createLocalCommunicator();
  const optimizer = optimizerStep(config, comm, model.namedVariables(), undefined);
  const balance = balanceController(config, L, E, comm);
  // Two domains whose tokens differ, so the micro-batches route differently.
  const streams = [0, 1].map((d) => ({
    domain: `d${d}`,
    tokens: Int32Array.from({ length: 400 }, (_, i) => (d * 32 + ((i * 7 + d) % 29)) % V),
  }));
  const batcher = new Batcher(streams, { seqLen: 8, batchSize: 2, mode: 'domain', seed: 3 });
  /** Each training pass's counts and mean scores P per layer, in micro-batch order. */
  const seen: { countsLE: Int32Array[]; meanPLE: Float64Array[] }[] = [];
  const trainStep = new TrainStep(
    config,
    { model, shape, optimizer, balance, batcher, noiseRng: new Rng(9).fork('noise') },
    comm,
    (plans) =>
      seen.push({
        countsLE: plans.map((p) => p.countsE.slice()),
        meanPLE: plans.map((p) => {
          const meanE = tf.mean(p.probsTE, 0);
          const out = Float64Array.from(meanE.dataSync());
          meanE.dispose();
          return out;
        }),
      }),
  );
  return { config, model, balance, trainStep, optimizer, seen, L, E, k };
}

describe("global balance loss pooled over the whole step (globalPool 'step')", () => {
  it('the prepass routes what training routes, and every micro-batch loss takes f from all M micro-batches', () => {
    const { model, balance, trainStep, optimizer, seen, L, E } = tinyStep('step');
    const prepass: number[][][] = [];
    const observeStep = balance.observeStep.bind(balance);
    balance.observeStep = (countsMLE, first) => {
      prepass.push(...countsMLE.map((c) => c.map((e) => Array.from(e))));
      observeStep(countsMLE, first);
    };
    const auxByMicro: number[] = [];
    const loss = balance.loss.bind(balance);
    balance.loss = (plans, m, first) => {
      const r = loss(plans, m, first);
      auxByMicro.push(r ? r.dataSync()[0]! : Number.NaN);
      return r;
    };
    const M = 3;
    for (let step = 0; step < 2; step++) {
      seen.length = 0;
      prepass.length = 0;
      auxByMicro.length = 0;
      trainStep.run(step, undefined);
      expect(seen).toHaveLength(M);
      // (d) the prepass's counts are the training passes' counts, micro-batch by micro-batch (jitter on).
      expect(prepass).toEqual(seen.map((s) => s.countsLE.map((c) => Array.from(c))));
      // (a) f of every micro-batch's loss = the selection frequencies of the whole step.
      const stepCountsLE = Array.from({ length: L }, (_, l) => {
        const c = new Float64Array(E);
        for (const s of seen) for (let e = 0; e < E; e++) c[e]! += s.countsLE[l]![e]!;
        return c;
      });
      const expected = (m: number, countsLE: readonly ArrayLike<number>[]): number => {
        let sum = 0;
        for (let l = 0; l < L; l++) {
          const c = countsLE[l]!;
          let total = 0;
          for (let e = 0; e < E; e++) total += c[e]!;
          for (let e = 0; e < E; e++) sum += ALPHA * E * (c[e]! / total) * seen[m]!.meanPLE[l]![e]!;
        }
        return sum;
      };
      for (let m = 0; m < M; m++) expect(auxByMicro[m]).toBeCloseTo(expected(m, stepCountsLE), 5);
      // The first micro-batch's own counts differ from the step's, so the check above can fail.
      const own = expected(0, seen[0]!.countsLE);
      expect(Math.abs(own - expected(0, stepCountsLE))).toBeGreaterThan(1e-7);
    }
    trainStep.dispose();
    optimizer.dispose();
    model.dispose();
  }, 60_000);

  it('the gradient flows through P only: alpha * E * sum_i f_i dP_i/dW, f from integer counts', () => {
    const T = 6;
    const D = 3;
    const E = 4;
    const xTD = tf.tensor2d(
      Array.from({ length: T * D }, (_, i) => Math.sin(i + 1)),
      [T, D],
    );
    const w = tf.variable(
      tf.tensor2d(
        Array.from({ length: D * E }, (_, i) => Math.cos(i * 0.7) * 0.5),
        [D, E],
      ),
      true,
      'step-pool-router-w',
    );
    const c = new BalanceController({
      method: 'global',
      alpha: ALPHA,
      localRatio: 0.01,
      biasUpdateRate: 0,
      globalPool: 'step',
      zLoss: 0,
      numLayers: 1,
      numExperts: E,
      seqLen: T,
      seed: 1,
    });
    // The step's two micro-batches: counts of top-1 selections (the second micro-batch's are given).
    const countsA = Int32Array.from([3, 1, 2, 0]);
    const countsB = Int32Array.from([0, 2, 1, 3]);
    c.observeStep([[countsA], [countsB]]);
    const planOf = (): RoutingPlan => {
      const logitsTE = tf.matMul(xTD, w) as tf.Tensor2D;
      return {
        logitsTE,
        probsTE: tf.softmax(logitsTE) as tf.Tensor2D,
        countsE: countsA,
        expertIdx: new Int32Array(T),
        k: 1,
      } as unknown as RoutingPlan;
    };
    const { value, grads } = tf.variableGrads(() => c.loss([planOf()], 0)!, [w]);
    const gotDE = grads[w.name]!.arraySync() as number[][];
    // By hand: f = (3, 3, 3, 3) / 12; d/dlogit_tj of alpha E sum_i f_i mean_t p_ti is
    // (alpha E / T) p_tj (f_j - sum_i f_i p_ti); dW = x^T G.
    const f = [3, 3, 3, 3].map((v) => v / 12);
    const p = tf.tidy(() => tf.softmax(tf.matMul(xTD, w)).arraySync() as number[][]);
    const x = xTD.arraySync() as number[][];
    const want = Array.from({ length: D }, () => new Array<number>(E).fill(0));
    let lossByHand = 0;
    for (let t = 0; t < T; t++) {
      const fp = f.reduce((s, fi, i) => s + fi * p[t]![i]!, 0);
      lossByHand += (ALPHA * E * fp) / T;
      for (let j = 0; j < E; j++) {
        const g = ((ALPHA * E) / T) * p[t]![j]! * (f[j]! - fp);
        for (let d = 0; d < D; d++) want[d]![j]! += x[t]![d]! * g;
      }
    }
    expect(value.dataSync()[0]).toBeCloseTo(lossByHand, 6);
    for (let d = 0; d < D; d++) for (let j = 0; j < E; j++) expect(gotDE[d]![j]).toBeCloseTo(want[d]![j]!, 6);
    // Uniform f: the gradient vanishes although the counts of micro-batch A alone are skewed.
    expect(Math.max(...gotDE.flat().map(Math.abs))).toBeLessThan(1e-7);
    value.dispose();
    tf.dispose(grads);
    // A skewed pool gives a gradient that matches the same formula.
    c.afterStep();
    c.observeStep([[countsA], [countsA]]);
    const skewed = tf.variableGrads(() => c.loss([planOf()], 1)!, [w]);
    const g2 = skewed.grads[w.name]!.arraySync() as number[][];
    const f2 = Array.from(countsA, (v) => v / 6);
    const want2 = Array.from({ length: D }, () => new Array<number>(E).fill(0));
    for (let t = 0; t < T; t++) {
      const fp = f2.reduce((s, fi, i) => s + fi * p[t]![i]!, 0);
      for (let j = 0; j < E; j++) {
        const g = ((ALPHA * E) / T) * p[t]![j]! * (f2[j]! - fp);
        for (let d = 0; d < D; d++) want2[d]![j]! += x[t]![d]! * g;
      }
    }
    for (let d = 0; d < D; d++) for (let j = 0; j < E; j++) expect(g2[d]![j]).toBeCloseTo(want2[d]![j]!, 6);
    expect(Math.max(...g2.flat().map(Math.abs))).toBeGreaterThan(1e-4);
    skewed.value.dispose();
    tf.dispose(skewed.grads);
    tf.dispose([xTD, w]);
  });

  it('leaks no tensors over a step with the prepass', async () => {
    const { model, trainStep, optimizer } = tinyStep('step');
    trainStep.run(0, undefined);
    let step = 1;
    await expectNoLeaks(() => {
      trainStep.run(step++, undefined);
    }, 'train step with the routing prepass');
    trainStep.dispose();
    optimizer.dispose();
    model.dispose();
  }, 60_000);
});
