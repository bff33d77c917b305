/**
 * Expert parallelism through the CLI (`--ranks 2 --expert-parallel 2`, with and without redundant
 * experts): after one step the gradients (read back from the checkpointed AdamW moments, m = 0.1 g)
 * equal the one-rank gradients of the same global batch; a 50-step run with online rebalancing
 * follows the one-rank loss curve; its checkpoints hold full experts, load on one rank, and resume
 * there. Training runs only on wasm.
 */
import { cpSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadCheckpoint } from '@switchyard/model';
import { tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { runCli as cli, relativeDifference, scratchFolder, TINY_TWO_GENRES } from '../test/cli';

const onCpu = process.env.SWITCHYARD_BACKEND === 'cpu';
const root = scratchFolder('sy-ep-');

const RUN = [
  ...TINY_TWO_GENRES,
  '--set',
  'eval.every=0',
  '--set',
  'eval.tokensPerDomain=64',
  '--set',
  'log.plots=false',
  '--set',
  'log.progress=quiet',
];

interface Metrics {
  loss: number;
  expertBalance?: number;
  rebalance?: { before: number; after: number; migrated: boolean; migrationMs: number };
}

function metrics(dir: string): Metrics[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Metrics);
}

/** The final checkpoint's tensors: model variables by name and optimizer moments by key. */
async function checkpointTensors(dir: string) {
  const { model, extraTensors } = await loadCheckpoint(join(dir, 'checkpoints', 'final'));
  const read = (t: tf.Tensor) => ({ shape: t.shape, values: t.dataSync() as Float32Array });
  const weights = new Map([...model.namedVariables()].map(([n, v]) => [n, read(v)]));
  const moments = new Map(Object.entries(extraTensors ?? {}).map(([n, t]) => [n, read(t)]));
  model.dispose();
  tf.dispose(Object.values(extraTensors ?? {}));
  return { weights, moments };
}

describe('switchyard-train --expert-parallel', () => {
  it.skipIf(onCpu)(
    'after one step, expert-parallel gradients (with and without redundant experts) equal the one-rank gradients',
    async () => {
      const step = [
        ...RUN,
        '--set',
        'train.steps=1',
        '--set',
        'train.clipNorm=0',
        '--set',
        'balance.method=global',
      ];
      const dirs = { one: join(root, 'g1'), ep: join(root, 'g-ep'), copies: join(root, 'g-copies') };
      const runs = await Promise.all([
        cli([...step, '--out', dirs.one]),
        cli([...step, '--out', dirs.ep, '--ranks', '2', '--expert-parallel', '2']),
        cli([
          ...step,
          ...['--out', dirs.copies, '--ranks', '2', '--expert-parallel', '2'],
          ...['--set', 'parallel.redundantExperts=2'],
        ]),
      ]);
      for (const r of runs) expect(r.code, r.err).toBe(0);
      // the placement in force is saved with the trainer state: 6 slots, expert copies included
      const state = JSON.parse(
        readFileSync(join(dirs.copies, 'checkpoints', 'final', 'trainer_state.json'), 'utf8'),
      ) as { experts: { degree: number; physToLog: number[][] } };
      expect(state.experts.degree).toBe(2);
      expect(state.experts.physToLog.map((m) => m.length)).toEqual([6]);
      const one = await checkpointTensors(dirs.one);
      for (const dir of [dirs.ep, dirs.copies]) {
        const got = await checkpointTensors(dir);
        // full experts in the single-device layout, whatever the layout that wrote them
        expect([...got.weights.keys()]).toEqual([...one.weights.keys()]);
        for (const [name, w] of one.weights) expect(got.weights.get(name)!.shape, name).toEqual(w.shape);
        // m after one AdamW step is 0.1 * the gradient: every gradient matches, experts included
        expect([...got.moments.keys()].sort()).toEqual([...one.moments.keys()].sort());
        for (const [key, m] of one.moments) {
          if (!key.startsWith('m/')) continue;
          expect(relativeDifference(m.values, got.moments.get(key)!.values), `${dir} ${key}`).toBeLessThan(
            1e-4,
          );
        }
        expect(got.moments.has('m/layers.1.moe.experts.w1')).toBe(true);
      }
    },
    120_000,
  );

  it.skipIf(onCpu)(
    'with redundant experts rebalanced every 10 steps follows the one-rank curve for 50 steps; checkpoints resume under the other layout',
    async () => {
      const run = [
        ...RUN,
        '--set',
        'train.steps=50',
        '--set',
        'balance.method=none',
        '--set',
        'checkpoint.every=25',
      ];
      const one = join(root, 'c1');
      const ep = join(root, 'c-ep');
      const [r1, r2] = await Promise.all([
        cli([...run, '--out', one]),
        cli([
          ...run,
          ...['--out', ep, '--ranks', '2', '--expert-parallel', '2'],
          ...['--set', 'parallel.redundantExperts=2', '--set', 'parallel.rebalanceEvery=10'],
        ]),
      ]);
      expect(r1.code, r1.err).toBe(0);
      expect(r2.code, r2.err).toBe(0);
      const a = metrics(one);
      const b = metrics(ep);
      expect(b).toHaveLength(50);
      let worst = 0;
      for (let i = 0; i < 50; i++) worst = Math.max(worst, Math.abs(b[i]!.loss - a[i]!.loss));
      expect(worst).toBeLessThan(1e-3);
      expect(a[49]!.loss).toBeLessThan(a[0]!.loss - 0.3); // it learns: not two flat curves
      // rebalances every 10 steps; with balancing off the load skews, and a move restores balance
      const moves = b.filter((m) => m.rebalance !== undefined);
      expect(moves).toHaveLength(5);
      const moved = moves.filter((m) => m.rebalance!.migrated);
      expect(moved.length).toBeGreaterThan(0);
      for (const m of moved) {
        expect(m.rebalance!.after).toBeGreaterThan(m.rebalance!.before);
        expect(m.rebalance!.migrationMs).toBeGreaterThan(0);
      }
      expect(b.every((m) => m.expertBalance! > 0 && m.expertBalance! <= 1)).toBe(true);
      expect(a.every((m) => m.expertBalance === undefined)).toBe(true);
      // step-25 checkpoints continue under the other layout: the two-rank run's on one rank, the
      // one-rank run's on two ranks with expert parallelism (its slots take their experts' moments)
      const resumeAt = (dir: string, name: string): string => {
        const copy = join(root, name);
        cpSync(dir, copy, { recursive: true });
        rmSync(join(copy, 'checkpoints', 'final'), { recursive: true });
        return copy;
      };
      const toOne = resumeAt(ep, 'c-ep-on-1');
      const toEp = resumeAt(one, 'c-1-on-ep');
      const resumed = await Promise.all([
        cli(['--resume', join(toOne, 'checkpoints', 'step-000025'), '--expert-parallel', '1']),
        cli(['--resume', join(toEp, 'checkpoints', 'step-000025'), '--ranks', '2', '--expert-parallel', '2']),
      ]);
      for (const r of resumed) expect(r.code, r.err).toBe(0);
      const c = metrics(toOne);
      const d = metrics(toEp);
      for (let i = 25; i < 50; i++) {
        expect(Math.abs(c[i]!.loss - b[i]!.loss)).toBeLessThan(1e-3);
        expect(Math.abs(d[i]!.loss - a[i]!.loss)).toBeLessThan(1e-3);
      }
      expect(c[49]!.expertBalance).toBeUndefined();
      expect(d[49]!.expertBalance).toBeGreaterThan(0);
    },
    180_000,
  );

  it('refuses layouts the ranks cannot hold before starting any rank', async () => {
    const r = (extra: string[]) => cli([...RUN, '--out', join(root, 'bad'), ...extra]);
    const alone = await r(['--expert-parallel', '2']);
    expect(alone.code).toBe(2);
    expect(alone.err).toMatch(
      /parallel\.expertParallel: expected a divisor of the number of ranks \(1\), got 2; start 2 or more ranks with --ranks/,
    );
    const three = await r(['--ranks', '2', '--expert-parallel', '3']);
    expect(three.err).toMatch(
      /parallel\.expertParallel: expected a divisor of the number of ranks \(2\), got 3/,
    );
    const host = await r(['--ranks', '2', '--expert-parallel', '2', '--set', 'train.optimizerOn=host']);
    expect(host.code).toBe(2);
    expect(host.err).toMatch(
      /train\.optimizerOn: expected auto or backend with parallel\.expertParallel > 1/,
    );
    const piped = await r(['--ranks', '2', '--expert-parallel', '2', '--pipeline', '2']);
    expect(piped.code).toBe(2);
    expect(piped.err).toMatch(
      /parallel\.expertParallel: expected 1 under a pipeline \(parallel\.pipeline = 2\)/,
    );
    const word = await r(['--expert-parallel', 'two']);
    expect(word.code).toBe(2);
    expect(word.err).toMatch(/--expert-parallel: expected an integer >= 1, got "two"/);
    const ev = await cli(['eval', '--checkpoint', root, '--text', root, '--expert-parallel', '2']);
    expect(ev.code).toBe(2);
    expect(ev.err).toMatch(/--pipeline, --schedule and --expert-parallel apply to train only, not to eval/);
  });
});
