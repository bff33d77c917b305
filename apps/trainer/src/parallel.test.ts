/**
 * Data-parallel training through the CLI (`--ranks 2`, worker-thread ranks): the loss curve follows
 * the one-rank run with the same seed and global batch, only rank 0 writes the run folder, and the
 * launcher flags are checked. Training runs only on wasm.
 */
import { cpSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadCheckpoint } from '@switchyard/model';
import { expectNoLeaks, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { runCli as cli, relativeDifference, scratchFolder, stepRecords, TINY_TWO_GENRES } from '../test/cli';
import { StopRequest } from './run/interrupt';

const onCpu = process.env.SWITCHYARD_BACKEND === 'cpu';
const root = scratchFolder('sy-ranks-');

const RUN = [
  ...TINY_TWO_GENRES,
  '--set',
  'train.steps=6',
  '--set',
  'eval.every=0',
  '--set',
  'eval.tokensPerDomain=64',
  '--set',
  'log.plots=false',
  '--set',
  'log.progress=lines',
  '--set',
  'balance.method=global',
];

const losses = (dir: string) => stepRecords<{ loss: number; auxLoss: number; tokens: number }>(dir);

describe('switchyard-train --ranks', () => {
  it.skipIf(onCpu)(
    'two data-parallel ranks follow the one-rank loss curve (same seed, same global batch)',
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
        '2',
        '--set',
        'checkpoint.every=3',
        '--set',
        'train.optimizerOn=host',
      ]);
      expect(r2.code, r2.err).toBe(0);
      expect(r2.out).toMatch(/final val_loss: \d/);
      expect(existsSync(join(two, 'checkpoints', 'final', 'trainer_state.json'))).toBe(true);
      const a = losses(one);
      const b = losses(two);
      expect(b).toHaveLength(6);
      for (let i = 0; i < a.length; i++) {
        expect(b[i]!.tokens).toBe(a[i]!.tokens);
        expect(Math.abs(b[i]!.loss - a[i]!.loss)).toBeLessThan(2e-3 * a[i]!.loss);
        expect(Math.abs(b[i]!.auxLoss - a[i]!.auxLoss)).toBeLessThan(1e-3 + 1e-2 * a[i]!.auxLoss);
      }
      // Training moved the loss: the comparison is not between two flat curves.
      expect(a[5]!.loss).toBeLessThan(a[0]!.loss);
      // The step phases show the all-reduces on two ranks only.
      const phases = (dir: string) =>
        readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
          .trim()
          .split('\n')
          .map((l) => (JSON.parse(l) as { phaseMs: { sync: number } }).phaseMs.sync);
      expect(phases(one).every((ms) => ms === 0)).toBe(true);
      expect(phases(two).every((ms) => ms > 0)).toBe(true);
      const v1 = Number(/final val_loss: ([\d.]+)/.exec(r1.out)![1]);
      const v2 = Number(/final val_loss: ([\d.]+)/.exec(r2.out)![1]);
      expect(Math.abs(v2 - v1)).toBeLessThan(2e-3 * v1);
      // The two ranks split the validation batches and combine their sums: the record covers the whole set.
      const e1 = JSON.parse(readFileSync(join(one, 'eval.jsonl'), 'utf8').trim().split('\n').pop()!);
      const e2 = JSON.parse(readFileSync(join(two, 'eval.jsonl'), 'utf8').trim().split('\n').pop()!);
      expect(e2.tokens).toBe(e1.tokens);
      expect(Object.keys(e2.perDomainLoss)).toEqual(Object.keys(e1.perDomainLoss));
      for (const d of Object.keys(e1.perDomainLoss)) {
        expect(Math.abs(e2.perDomainLoss[d] - e1.perDomainLoss[d])).toBeLessThan(2e-3 * e1.perDomainLoss[d]);
      }
      expect(Math.abs(e2.maxVioGlobal - e1.maxVioGlobal)).toBeLessThan(0.05);
      expect(e2.specialization.flat(2).length).toBe(e1.specialization.flat(2).length);
    },
    120_000,
  );

  it.skipIf(onCpu)(
    'shards AdamW over the ranks: checkpointed moments match one rank, a resumed run continues exactly, the backend placement agrees',
    async () => {
      const one = join(root, 'one');
      const two = join(root, 'two');
      // 1. The moments in the final checkpoint, gathered from both ranks' halves, match the one-rank run's.
      const moments = async (dir: string): Promise<Map<string, Float32Array>> => {
        const { model, extraTensors } = await loadCheckpoint(join(dir, 'checkpoints', 'final'));
        model.dispose();
        const out = new Map<string, Float32Array>();
        for (const [name, t] of Object.entries(extraTensors ?? {}))
          out.set(name, t.dataSync() as Float32Array);
        tf.dispose(Object.values(extraTensors ?? {}));
        return out;
      };
      const m1 = await moments(one);
      const m2 = await moments(two);
      expect([...m2.keys()].sort()).toEqual([...m1.keys()].sort());
      expect(m1.size).toBeGreaterThan(10);
      for (const [name, a] of m1) expect(relativeDifference(a, m2.get(name)!), name).toBeLessThan(2e-2);
      // 2. Resuming the two-rank run from its step-3 checkpoint reproduces steps 4 to 6.
      const copy = join(root, 'two-resumed');
      cpSync(two, copy, { recursive: true });
      rmSync(join(copy, 'checkpoints', 'final'), { recursive: true });
      const r = await cli(['--resume', join(copy, 'checkpoints', 'step-000003'), '--ranks', '2']);
      expect(r.code, r.err).toBe(0);
      const a = losses(two);
      const b = losses(copy);
      expect(b).toHaveLength(6);
      for (let i = 3; i < 6; i++) expect(b[i]!.loss).toBeCloseTo(a[i]!.loss, 5);
      // 3. AdamW as tensor ops on every rank after an all-reduce follows the same curve.
      const replicated = join(root, 'two-backend');
      const r3 = await cli([
        ...RUN,
        '--out',
        replicated,
        '--ranks',
        '2',
        '--set',
        'train.optimizerOn=backend',
      ]);
      expect(r3.code, r3.err).toBe(0);
      expect(
        JSON.stringify(JSON.parse(readFileSync(join(replicated, 'run.json'), 'utf8')).config.train),
      ).toMatch(/"optimizerOn":"backend"/);
      const c = losses(replicated);
      const one1 = losses(one);
      for (let i = 0; i < 6; i++)
        expect(Math.abs(c[i]!.loss - one1[i]!.loss)).toBeLessThan(2e-3 * one1[i]!.loss);
      const m3 = await moments(replicated);
      for (const [name, x] of m1) expect(relativeDifference(x, m3.get(name)!), name).toBeLessThan(2e-2);
    },
    120_000,
  );

  it.skipIf(onCpu)(
    'stops every rank at the same step on request (Ctrl-C) and resumes on the same ranks exactly',
    async () => {
      const dir = join(root, 'two-stopped');
      const args = [...RUN, '--ranks', '2', '--set', 'checkpoint.every=3', '--set', 'train.optimizerOn=host'];
      const stop = new StopRequest();
      stop.request(); // as if Ctrl-C came during the first step
      const r = await cli([...args, '--out', dir], { stop });
      expect(r.code, r.err).toBe(130);
      expect(r.out).toContain(
        `interrupted after step 1 of 6; checkpoint saved: ${join(dir, 'checkpoints', 'step-000001')}`,
      );
      expect(r.out.trim().split('\n').pop()).toBe(
        `continue with: switchyard-train --resume ${dir} --ranks 2`,
      );
      const resumed = await cli(['--resume', dir, '--ranks', '2']);
      expect(resumed.code, resumed.err).toBe(0);
      const a = losses(join(root, 'two'));
      const b = losses(dir);
      expect(b).toHaveLength(6);
      for (let i = 0; i < 6; i++) expect(b[i]!.loss).toBeCloseTo(a[i]!.loss, 5);
    },
    120_000,
  );

  it('refuses launcher flags outside training and more ranks than sequences per micro-batch', async () => {
    const ev = await cli(['eval', '--checkpoint', root, '--text', root, '--ranks', '2']);
    expect(ev.code).toBe(2);
    expect(ev.err).toMatch(/--ranks.*training only/);
    const many = await cli([...RUN, '--out', join(root, 'many'), '--ranks', '8']);
    expect(many.code).toBe(2);
    expect(many.err).toMatch(/train\.microBatchSize: expected >= the number of ranks \(8\), got 4/);
    const bad = await cli([...RUN, '--ranks', 'two']);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--ranks/);
    const noMaster = await cli([...RUN, '--out', join(root, 'nm'), '--nnodes', '2']);
    expect(noMaster.code).toBe(2);
    expect(noMaster.err).toMatch(/master/);
  });

  it('leaves no tensors behind when a launch is refused', async () => {
    await expectNoLeaks(async () => {
      await cli([...RUN, '--out', join(root, 'leak'), '--ranks', '8']);
    });
  });
});
