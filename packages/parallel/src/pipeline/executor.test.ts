// The pipeline executor: after one step, every parameter's gradient equals the one-rank gradient of
// the same global batch, for every schedule kind (2 worker ranks), under PP x DP (4 ranks), and on
// one rank (DualPipeV with P = 1, in this thread); a dead or stalled stage fails every rank in time.
import { MoETransformerLM } from '@switchyard/model';
import { dualPipeV, SCHEDULE_KINDS, type Schedule, type StageWork } from '@switchyard/plan';
import { disposeRoutingPlan } from '@switchyard/routing';
import { expectNoLeaks, Rng, type Scalar, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import {
  aux,
  B,
  config,
  type FaultArgs,
  type GradArgs,
  type GradResult,
  noise,
  S,
  tokens,
} from '../../test/fixtures/pipeline.rank';
import { launch } from '../comm/launch';
import { createLocalCommunicator } from '../comm/local';
import { PipelineExecutor, type PipelineStages } from './executor';
import { blockRanges, modelStages, pipelineLayout } from './stages';

const fixture = new URL('../../test/fixtures/pipeline.rank.ts', import.meta.url);
const onCpu = process.env.SWITCHYARD_BACKEND === 'cpu';

/**
 * The one-rank run: `steps` SGD steps over `perStep` micro-batches each (weight 1 / perStep): the
 * first step's gradients (model names) and losses, and every step's mean loss.
 */
function reference(
  seed: number,
  perStep: number,
  steps = 1,
  lr = 0,
): { grads: Map<string, Float32Array>; losses: number[]; curve: number[] } {
  const model = new MoETransformerLM(config, new Rng(seed));
  const named = model.namedVariables();
  const R = perStep / 4; // replicas, each with 4 micro-batches in these tests
  const out = { grads: new Map<string, Float32Array>(), losses: [] as number[], curve: [] as number[] };
  for (let step = 0; step < steps; step++) {
    const sums = new Map<string, Float32Array>();
    const losses: number[] = [];
    for (let i = 0; i < perStep; i++) {
      const g = step * perStep + i;
      const { inputs, targets } = tokens(seed, g);
      const x = tf.tensor2d(inputs, [B, S], 'int32');
      const y = tf.tensor2d(targets, [B, S], 'int32');
      const { value, grads } = tf.variableGrads(() => {
        const { loss, plans } = model.loss(x, y, { training: true, rng: noise(seed, g) });
        losses.push(loss.dataSync()[0]!);
        const a = aux(plans);
        for (const p of plans) disposeRoutingPlan(p);
        const total = tf.mul(loss, 1 / perStep);
        return (a === undefined ? total : tf.add(total, tf.mul(a, 1 / Math.max(1, R)))) as Scalar;
      }, [...named.values()]);
      for (const [name, v] of named) {
        const d = grads[v.name]!.dataSync() as Float32Array;
        const acc = sums.get(name);
        if (acc === undefined) sums.set(name, d.slice());
        else for (let j = 0; j < d.length; j++) acc[j]! += d[j]!;
      }
      tf.dispose([x, y, value, ...Object.values(grads)]);
    }
    out.curve.push(losses.reduce((a, l) => a + l, 0) / perStep);
    if (step === 0) {
      out.grads = sums;
      out.losses = losses;
    }
    for (const [name, v] of named) {
      tf.tidy(() => v.assign(tf.sub(v, tf.mul(tf.tensor(sums.get(name)!, v.shape, 'float32'), lr))));
    }
  }
  model.dispose();
  return out;
}

function worstRelative(got: Float32Array, want: Float32Array): number {
  let diff = 0;
  let scale = 1e-6;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  return diff / scale;
}

/** Every variable's gradient, from whichever rank holds it, matches the reference (holders agree bit for bit). */
function expectReferenceGrads(
  perRank: readonly Record<string, Float32Array>[],
  want: Map<string, Float32Array>,
): void {
  for (const [name, w] of want) {
    const holders = perRank.filter((r) => r[name] !== undefined);
    expect(holders.length, name).toBeGreaterThan(0);
    for (const h of holders) {
      expect(Buffer.from(h[name]!.buffer).equals(Buffer.from(holders[0]![name]!.buffer)), name).toBe(true);
    }
    expect(worstRelative(holders[0]![name]!, w), name).toBeLessThan(1e-4);
  }
}

describe('PipelineExecutor on one rank', () => {
  it('runs DualPipeV with P = 1 (both stages on this rank) to the one-rank gradients, without leaks', async () => {
    const seed = 11;
    const schedule = dualPipeV({ ranks: 1, microBatches: 4 });
    const model = new MoETransformerLM(config, new Rng(seed));
    const stages = modelStages(model, {
      stages: schedule.stages,
      microBatch: { batch: B, seqLen: S },
      tokens: (m) => tokens(seed, m),
      forwardOptions: (w) => ({ training: true, rng: noise(seed, w.microBatch) }),
      lossScale: 1 / 4,
      aux: (_w, plans) => aux(plans),
    });
    const ex = new PipelineExecutor(schedule, createLocalCommunicator(), stages);
    expect(ex.stages).toEqual([0, 1]);
    const first = ex.run();
    const names = new Map([...model.namedVariables()].map(([n, v]) => [v, n]));
    const got = Object.fromEntries(
      [...first.grads].map(([v, g]) => [names.get(v)!, g.dataSync() as Float32Array]),
    );
    expectReferenceGrads([got], reference(seed, 4).grads);
    expect(first.timeline.map((t) => t.op.kind)).toEqual(schedule.ops[0]!.map((op) => op.kind));
    expect(first.timeline.every((t) => t.waitMs === 0 && t.end >= t.start)).toBe(true);
    tf.dispose([...first.grads.values()]);
    await expectNoLeaks(() => {
      const { grads } = ex.run();
      tf.dispose([...grads.values()]);
    });
    model.dispose();
  });

  it('checks the schedule, the communicator and what stages return, releasing what the step held', async () => {
    const w = (kind: StageWork['kind'], m: number, stage: number): StageWork => ({
      kind,
      microBatch: m,
      stage,
      chunk: 0,
      phase: 0,
    });
    // one rank, two stages, the second stage's backward split into Bi and W
    const schedule: Schedule = {
      kind: 'zb-h1',
      ranks: 1,
      microBatches: 1,
      stages: 2,
      chunks: 1,
      placement: [[0, 0]],
      phaseOf: [0],
      ops: [[w('F', 0, 0), w('F', 0, 1), w('Bi', 0, 1), w('B', 0, 0), w('W', 0, 1)]],
    };
    const a = tf.variable(tf.tensor2d([[1, 2]]), true, 'pipe.a');
    const b = tf.variable(tf.tensor2d([[3], [4]]), true, 'pipe.b');
    const good: PipelineStages = {
      variables: (s) => (s === 0 ? [a] : [b]),
      inputShape: () => [1, 2],
      forward: (work, input) =>
        work.stage === 0
          ? { activation: tf.mul(a, 2) }
          : { loss: tf.sum(tf.matMul(input!, b)) as Scalar, aux: tf.sum(tf.square(input!)) as Scalar },
    };
    const comm = createLocalCommunicator();
    const { grads } = new PipelineExecutor(schedule, comm, good).run();
    // x = 2a = [2, 4]; objective x·b + |x|^2: d/da = 2 (b + 2x) = [14, 24], d/db = x
    expect(Array.from(grads.get(a)!.dataSync())).toEqual([14, 24]);
    expect(Array.from(grads.get(b)!.dataSync())).toEqual([2, 4]);
    tf.dispose([...grads.values()]);

    expect(() => new PipelineExecutor({ ...schedule, ops: [schedule.ops[0]!.slice(1)] }, comm, good)).toThrow(
      /`schedule` passed to PipelineExecutor\(\) must be a valid schedule/,
    );
    const two = {
      ...schedule,
      ranks: 2,
      placement: [[0, 1]],
      ops: [
        [w('F', 0, 0), w('B', 0, 0)],
        [w('F', 0, 1), w('B', 0, 1)],
      ],
    };
    expect(() => new PipelineExecutor(two, comm, good)).toThrow(
      /`comm` passed to PipelineExecutor\(\) must be a communicator of the pipeline's 2 ranks, got "one of 1 ranks"/,
    );
    await expectNoLeaks(() => {
      const noActivation: PipelineStages = {
        ...good,
        forward: (work, input) => (work.stage === 0 ? {} : good.forward(work, input)),
      };
      expect(() => new PipelineExecutor(schedule, comm, noActivation).run()).toThrow(
        /the forward of stage 0 \(micro-batch 0\) must return a float32 `activation` for the next stage/,
      );
      const stray: PipelineStages = { ...good, variables: () => [b] };
      expect(() => new PipelineExecutor(schedule, comm, stray).run()).toThrow(
        /the forward of stage 0 read variable pipe.a, which stages.variables\(0\) does not list/,
      );
      const lossless: PipelineStages = {
        ...good,
        forward: (work, input) =>
          work.stage === 0 ? good.forward(work, input) : { activation: input!.clone() },
      };
      expect(() => new PipelineExecutor(schedule, comm, lossless).run()).toThrow(
        /must return a float32 scalar `loss` \(it is the last stage\)/,
      );
    });
    tf.dispose([a, b]);
  });

  it('cuts blocks evenly and lays out PP x DP ranks', () => {
    expect(blockRanges(6, 4)).toEqual([
      [0, 1],
      [1, 3],
      [3, 4],
      [4, 6],
    ]);
    expect(() => blockRanges(2, 4)).toThrow(
      /`numLayers` passed to blockRanges\(\) must be an integer >= 4, got 2/,
    );
    expect(pipelineLayout(4, 2, 3)).toEqual({
      pipeline: 2,
      replicas: 2,
      pipelineRank: 1,
      replica: 1,
      pipelineRanks: [2, 3],
      dataRanks: [1, 3],
    });
    expect(() => pipelineLayout(6, 4, 0)).toThrow(
      /`pipeline` passed to pipelineLayout\(\) must be a divisor of the 6 ranks/,
    );
  });
});

describe('PipelineExecutor on worker ranks', () => {
  it('every schedule kind on 2 ranks: the first step has the one-rank gradients and losses, SGD steps the one-rank curve', async () => {
    const seed = 5;
    const kinds = [...SCHEDULE_KINDS];
    // PIPELINE_CURVE_STEPS=50 runs the 50-step comparison (about 2 minutes on a free 2-core machine).
    const steps = Number(process.env.PIPELINE_CURVE_STEPS ?? (onCpu ? 3 : 10));
    const lr = 0.5;
    const { results } = await launch<GradArgs, GradResult>({
      module: fixture,
      exportName: 'gradients',
      ranks: 2,
      args: { seed, microBatches: 4, kinds, steps, lr },
      timeoutMs: 60_000,
    });
    const ref = reference(seed, 4, steps, lr);
    expect(ref.curve[steps - 1]!).toBeLessThan(ref.curve[0]! - (steps < 10 ? 0.01 : 0.1)); // training moves the loss
    for (const kind of kinds) {
      expectReferenceGrads(
        results.map((r) => r.grads[kind]!),
        ref.grads,
      );
      // the last stage's rank (rank 1, or rank 0 for DualPipeV and the second direction of DualPipe) saw every loss
      const seen = results.flatMap((r) =>
        r.losses[kind]!.map((l, m) => [m, l] as const).filter(([, l]) => l !== undefined && l !== null),
      );
      for (const [m, l] of seen) expect(l, `${kind} micro-batch ${m}`).toBeCloseTo(ref.losses[m]!, 5);
      expect(new Set(seen.map(([m]) => m)).size).toBe(4);
      const curve = results[0]!.curve[kind]!;
      expect(results[1]!.curve[kind]).toEqual(curve);
      curve.forEach((l, i) => {
        expect(Math.abs(l - ref.curve[i]!), `${kind} step ${i + 1}`).toBeLessThan(1e-4 * ref.curve[i]!);
      });
    }
  }, 600_000);

  it.skipIf(onCpu)(
    "PP x DP: two replicas of a 2-rank pipeline on 4 ranks give the one-rank gradients of both replicas' micro-batches",
    async () => {
      const seed = 6;
      const { results } = await launch<GradArgs, GradResult>({
        module: fixture,
        exportName: 'gradients',
        ranks: 4,
        args: { seed, microBatches: 4, kinds: ['1f1b', 'dualpipe'], pipeline: 2 },
        timeoutMs: 60_000,
      });
      const ref = reference(seed, 8);
      for (const kind of ['1f1b', 'dualpipe']) {
        expectReferenceGrads(
          results.map((r) => r.grads[kind]!),
          ref.grads,
        );
      }
    },
    120_000,
  );

  for (const how of ['exit', 'stall'] as const) {
    it.skipIf(onCpu)(
      `a stage that ${how === 'exit' ? 'dies' : 'stalls'} fails every rank, naming it`,
      async () => {
        const t0 = Date.now();
        const err = await launch<FaultArgs, string>({
          module: fixture,
          exportName: 'faulty',
          ranks: 2,
          args: { seed: 1, kind: '1f1b', victim: 1, how },
          timeoutMs: 3_000,
          shutdownGraceMs: 500,
        }).then(
          () => undefined,
          (e: Error & { code?: string }) => e,
        );
        expect(err?.code).toBe('RANK_FAILED');
        const cause = how === 'exit' ? 'RANK_FAILED' : 'TIMEOUT';
        expect(err?.message).toMatch(
          new RegExp(
            `rank 0: \\[${cause}\\] pipeline rank 0: B of micro-batch (\\d) on stage 0 needs the gradient of micro-batch \\1 from stage 1 on rank 1, which did not come: recv from rank 1 \\(tag \\d+\\) on rank 0 ${how === 'exit' ? 'cannot complete: rank 1 failed' : 'timed out after 3000 ms'}`,
          ),
        );
        expect(Date.now() - t0).toBeLessThan(60_000);
      },
      90_000,
    );
  }

  it('leaves no tensors behind in the test process', async () => {
    await expectNoLeaks(() => Promise.resolve());
  });
});
