/**
 * Pipeline-parallel training through the CLI (`--ranks 4 --pipeline 2`: two data-parallel replicas of
 * a 2-rank pipeline, worker-thread ranks): the loss curve follows the one-rank run with the same seed
 * and global batch, the checkpoint holds the
 * whole model and its moments, a pipeline checkpoint resumes on one rank, and bad layouts are refused
 * before any rank starts. Training runs only on wasm.
 */
import { cpSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadCheckpoint } from '@switchyard/model';
import { tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { runCli as cli, scratchFolder, stepRecords, TINY_TWO_GENRES } from '../test/cli';

const onCpu = process.env.SWITCHYARD_BACKEND === 'cpu';
const root = scratchFolder('sy-pipeline-');

const RUN = [
  ...TINY_TWO_GENRES,
  '--set',
  'model.numLayers=4',
  '--set',
  'train.steps=6',
  '--set',
  'train.gradAccum=4',
  '--set',
  'train.seqLen=16',
  '--set',
  'train.microBatchSize=2',
  '--set',
  'checkpoint.every=3',
  '--set',
  'eval.every=0',
  '--set',
  'eval.tokensPerDomain=64',
  '--set',
  'log.plots=false',
  '--set',
  'log.progress=quiet',
  '--set',
  'balance.method=loss-free',
  '--set',
  'balance.biasUpdateRate=0.01',
];

const losses = (dir: string) =>
  stepRecords<{ loss: number; auxLoss: number; gradNorm: number; maxVioBatch: number }>(dir);

describe('switchyard-train --pipeline', () => {
  it.skipIf(onCpu)(
    'two replicas of a 2-rank DualPipeV pipeline (4 ranks) follow the one-rank curve, save whole checkpoints, and resume on one rank',
    async () => {
      const one = join(root, 'one');
      const two = join(root, 'two');
      const r1 = await cli([...RUN, '--out', one]);
      expect(r1.code, r1.err).toBe(0);
      const r2 = await cli([
        ...RUN,
        '--out',
        two,
        '--ranks',
        '4',
        '--pipeline',
        '2',
        '--schedule',
        'dualpipev',
      ]);
      expect(r2.code, r2.err).toBe(0);
      const a = losses(one);
      const b = losses(two);
      expect(b).toHaveLength(6);
      for (let i = 0; i < 6; i++) {
        for (const key of ['loss', 'auxLoss', 'gradNorm'] as const) {
          expect(Math.abs(b[i]![key] - a[i]![key]), `step ${i + 1} ${key}`).toBeLessThan(
            1e-4 * a[i]![key] + 1e-7,
          );
        }
        expect(b[i]!.maxVioBatch).toBeCloseTo(a[i]!.maxVioBatch, 4);
      }
      expect(a[5]!.loss).toBeLessThan(a[0]!.loss);
      expect(JSON.parse(readFileSync(join(two, 'run.json'), 'utf8')).config.parallel).toEqual({
        pipeline: 2,
        schedule: 'dualpipev',
        virtualStages: 2,
        expertParallel: 1,
        redundantExperts: 0,
        rebalanceEvery: 0,
      });
      // The final checkpoint holds the whole model (weights and loss-free biases) and every moment.
      const v1 = Number(/final val_loss: ([\d.]+)/.exec(r1.out)![1]);
      const v2 = Number(/final val_loss: ([\d.]+)/.exec(r2.out)![1]);
      expect(Math.abs(v2 - v1)).toBeLessThan(1e-3 * v1);
      const c1 = await loadCheckpoint(join(one, 'checkpoints', 'final'));
      const c2 = await loadCheckpoint(join(two, 'checkpoints', 'final'));
      const w1 = c1.model.namedVariables();
      for (const [name, v] of c2.model.namedVariables()) {
        const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(v, w1.get(name)!))).dataSync()[0]!);
        expect(diff, name).toBeLessThan(1e-4);
      }
      expect(Object.keys(c2.extraTensors ?? {}).sort()).toEqual(Object.keys(c1.extraTensors ?? {}).sort());
      for (const l of [0, 1, 2]) {
        expect(Array.from(c2.model.getSelectionBias(l) ?? [])).toEqual(
          Array.from(c1.model.getSelectionBias(l) ?? []),
        );
      }
      expect(c1.model.getSelectionBias(2)?.some((x) => x !== 0)).toBe(true);
      for (const c of [c1, c2]) {
        c.model.dispose();
        tf.dispose(Object.values(c.extraTensors ?? {}));
      }
      // The pipeline's step-3 checkpoint resumes on one rank (another layout) and continues the curve.
      const copy = join(root, 'two-on-one');
      cpSync(two, copy, { recursive: true });
      rmSync(join(copy, 'checkpoints', 'final'), { recursive: true });
      const r3 = await cli(['--resume', join(copy, 'checkpoints', 'step-000003'), '--pipeline', '1']);
      expect(r3.code, r3.err).toBe(0);
      const c = losses(copy);
      expect(c).toHaveLength(6);
      for (let i = 3; i < 6; i++) expect(Math.abs(c[i]!.loss - b[i]!.loss)).toBeLessThan(1e-4 * b[i]!.loss);
    },
    240_000,
  );

  it('refuses layouts the ranks, the schedule or the model cannot run, before any rank starts', async () => {
    const out = join(root, 'bad');
    const cases: [string[], RegExp][] = [
      [
        ['--ranks', '3', '--pipeline', '2'],
        /parallel\.pipeline: expected a divisor of the number of ranks \(3\), got 2/,
      ],
      [['--pipeline', '2'], /parallel\.pipeline: expected a divisor of the number of ranks \(1\), got 2/],
      [
        ['--ranks', '2', '--pipeline', '2', '--schedule', 'dualpipe', '--set', 'train.gradAccum=2'],
        /train\.gradAccum \(the micro-batches of a pipeline step\): `microBatches` passed to dualPipe\(\) must be even and >= 2 \* ranks \(4\), got 2 \(parallel\.schedule=dualpipe\)/,
      ],
      [
        ['--ranks', '2', '--pipeline', '2', '--schedule', 'interleaved', '--set', 'model.numLayers=3'],
        /model\.numLayers: expected >= the 4 stages of the interleaved schedule on 2 ranks \(every stage runs at least one block\), got 3/,
      ],
      [
        ['--ranks', '2', '--pipeline', '2', '--schedule', 'dualpipe', '--set', 'balance.method=global'],
        /balance\.method: the global-batch loss pools each micro-batch's counts as it arrives, and DualPipe runs every stage as two copies/,
      ],
      [['--ranks', '2', '--pipeline', '2', '--schedule', 'zigzag'], /parallel\.schedule/],
      [
        ['--ranks', '4', '--pipeline', '2', '--set', 'train.microBatchSize=1'],
        /train\.microBatchSize: expected >= the number of data-parallel replicas \(2\), got 1/,
      ],
    ];
    for (const [args, want] of cases) {
      const r = await cli([...RUN, '--out', out, ...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err).toMatch(want);
    }
    const ev = await cli(['eval', '--checkpoint', root, '--text', root, '--pipeline', '2']);
    expect(ev.code).toBe(2);
    expect(ev.err).toMatch(/--pipeline, --schedule and --expert-parallel apply to train only, not to eval/);
  });
});
