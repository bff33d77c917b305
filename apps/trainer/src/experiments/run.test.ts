import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createReporter } from '../reporter';
import {
  type ArmResult,
  compareLoss,
  lowerLossVerdict,
  noWorseLossVerdict,
  seedStat,
  summariseSeeds,
} from './claims';
import { EXPERIMENTS } from './definitions';
import {
  armConfig,
  checkClaims,
  experimentSeeds,
  noiseFloor,
  rerunCommand,
  runExperiment,
  topKShare,
} from './run';

const onCpu = process.env.SWITCHYARD_BACKEND === 'cpu';

function arm(id: string, over: Partial<ArmResult>): ArmResult {
  return {
    id,
    label: id,
    seed: 1234,
    steps: 10,
    finalValLoss: 5,
    finalTrainLoss: 5,
    unigramValLoss: 6,
    maxVioGlobal: 0.3,
    maxVioBatch: 0.3,
    maxVioMicro: 0.4,
    maxVioSeq: 1,
    maxVioMicroFloor: 0.1,
    maxVioSeqFloor: 0.8,
    specializationPeak: 1.5,
    topKShare: 0.3,
    domainExpertMI: 0.01,
    liftPeak: 1.2,
    routerLse2: 10,
    trainDropRate: 0,
    evalDropRate: 0,
    tokensPerSec: 1000,
    wallSec: 10,
    k: 2,
    numExperts: 8,
    ...over,
  };
}

describe('experiment definitions', () => {
  it('give every arm a valid configuration with the user overrides applied last', () => {
    for (const def of Object.values(EXPERIMENTS)) {
      for (const a of def.arms) {
        const c = armConfig(def, a, '/tmp/x', ['train.steps=7'], 'wasm');
        expect(c.name).toBe(`${def.name}-${a.id}`);
        expect(c.out).toBe(`/tmp/x/${a.id}`);
        expect(c.train.steps).toBe(7);
        expect(c.backend).toBe('wasm');
        for (const id of def.seededArms ?? []) expect(def.arms.map((x) => x.id)).toContain(id);
      }
    }
    const bs = EXPERIMENTS['balance-scope']!;
    const c = armConfig(bs, bs.arms.find((a) => a.id === 'global-1e-2')!, '/tmp/x');
    expect(c.data).toMatchObject({ batching: 'domain', corpus: 'domains' });
    expect(c.train.gradAccum).toBeGreaterThanOrEqual(8);
    expect(c.balance).toMatchObject({ method: 'global', globalPool: 'step' });
    expect(c.model.moe.experts.numExperts).toBe(16);
    const lf = EXPERIMENTS['loss-free']!;
    expect(armConfig(lf, lf.arms[0]!, '/tmp/x').model.moe.router.type).toBe('sigmoid');
  });

  it('put other seeds in their own folders and count seeds up from the configured one', () => {
    const z = EXPERIMENTS['z-loss']!;
    expect(armConfig(z, z.arms[0]!, '/tmp/x', [], undefined, 1235).out).toBe('/tmp/x/no-z-seed1235');
    expect(armConfig(z, z.arms[0]!, '/tmp/x', [], undefined, 1234).out).toBe('/tmp/x/no-z');
    expect(experimentSeeds(z, undefined)).toEqual([1234, 1235]);
    expect(experimentSeeds(z, 3, ['seed=7'])).toEqual([7, 8, 9]);
    expect(experimentSeeds(z, [5])).toEqual([5]);
    expect(() => experimentSeeds(z, 0)).toThrow(/--seeds: expected a positive count, got 0/);
    expect(rerunCommand('z-loss', [1, 2], ['train.steps=5'])).toBe(
      'switchyard-train experiment z-loss --seeds 1,2 --set train.steps=5 --jobs 2',
    );
  });
});

describe('seed aggregation and verdicts', () => {
  it('summarises an arm over its seeds', () => {
    expect(seedStat([1, 3, Number.NaN])).toEqual({ mean: 2, min: 1, max: 3, n: 2 });
    const s = summariseSeeds([
      arm('a', { finalValLoss: 5, seed: 1 }),
      arm('a', { finalValLoss: 5.2, seed: 2 }),
    ]);
    expect(s.finalValLoss).toBeCloseTo(5.1, 12);
    expect(s.seeds).toEqual([1, 2]);
    expect(s.stat('finalValLoss')).toMatchObject({ min: 5, max: 5.2, n: 2 });
  });

  it('counts a loss gap only beyond twice the larger seed spread', () => {
    const two = (id: string, a: number, b: number) =>
      summariseSeeds([arm(id, { finalValLoss: a, seed: 1 }), arm(id, { finalValLoss: b, seed: 2 })]);
    // spread 0.01 -> threshold 0.02
    expect(compareLoss(two('g', 4.9, 4.91), two('m', 5.0, 5.005)).direction).toBe('below');
    expect(lowerLossVerdict(compareLoss(two('g', 4.99, 5.0), two('m', 5.0, 5.005))).verdict).toBe(
      'not detected',
    );
    expect(lowerLossVerdict(compareLoss(two('g', 5.1, 5.11), two('m', 5.0, 5.005))).verdict).toBe(
      'contradicted',
    );
    expect(noWorseLossVerdict(compareLoss(two('g', 5.01, 5.02), two('m', 5.0, 5.005))).verdict).toBe(
      'reproduced',
    );
    const one = (id: string, v: number) => summariseSeeds([arm(id, { finalValLoss: v })]);
    expect(lowerLossVerdict(compareLoss(one('g', 4), one('m', 5)))).toEqual({
      verdict: 'not detected',
      note: 'one seed, no spread',
    });
  });

  it('checks claims on the seed means, and only once every arm has a run', () => {
    const runs = [
      ...[1, 2].flatMap((seed) => [
        arm('no-z', { seed, routerLse2: 20, finalValLoss: 5.0 + seed * 0.001 }),
        arm('z-1e-3', { seed, routerLse2: 5, finalValLoss: 4.99 + seed * 0.001 }),
      ]),
    ];
    expect(checkClaims('z-loss', runs).map((c) => c.verdict)).toEqual(['reproduced', 'reproduced']);
    expect(checkClaims('z-loss', runs.slice(0, 1))).toEqual([]);
    const one = runs.filter((r) => r.seed === 1);
    expect(checkClaims('z-loss', one)[1]).toMatchObject({
      verdict: 'not detected',
      note: 'one seed, no spread',
    });
  });

  it('reports the noise floor of uniform routing, 0 when every expert is selected', () => {
    const f = noiseFloor(512, 16, 2);
    expect(f).toBeGreaterThan(0.1);
    expect(f).toBeLessThan(0.6);
    expect(noiseFloor(64, 16, 2)).toBeGreaterThan(f);
    expect(noiseFloor(64, 4, 4)).toBe(0);
  });

  it('averages the top-K share of each domain', () => {
    const e = {
      specialization: [
        [
          [0.5, 0.5, 0, 0],
          [1, 0.5, 0.25, 0.25],
        ],
      ],
    } as never;
    expect(topKShare(e, 1)).toBeCloseTo((0.5 + 0.5) / 2, 10);
  });
});

describe.skipIf(onCpu)('an experiment end to end (wasm)', () => {
  it('expert-choice with 2 seeds: spread columns, the causal evaluation column and a verdict per claim', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sy-exp-'));
    try {
      const r = await runExperiment('expert-choice', {
        out: dir,
        seeds: 2,
        backend: 'wasm',
        reporter: createReporter({ mode: 'quiet' }),
        sets: [
          'data.corpus=brown',
          'data.genres=[news, humor]',
          'data.maxTextsPerDomain=3',
          'tokenizer.vocabSize=300',
          'model.dModel=16',
          'model.numLayers=1',
          'model.numHeads=2',
          'model.numKvHeads=1',
          'model.moe.experts.dFF=16',
          'train.steps=2',
          'train.microBatchSize=2',
          'train.seqLen=16',
          'train.warmupSteps=1',
          'eval.every=0',
          'eval.tokensPerDomain=64',
          'checkpoint.every=0',
          'log.plots=false',
          'log.progress=quiet',
        ],
      });
      expect(r.pending).toEqual([]);
      expect(r.arms.map((a) => `${a.id}:${a.seed}`)).toEqual([
        'top-2:1234',
        'top-2:1235',
        'expert-choice:1234',
        'expert-choice:1235',
      ]);
      // Token choice is causal already: both evaluations score the same.
      for (const a of r.arms.filter((x) => x.id === 'top-2')) {
        expect(a.extraEvals?.causal?.valLoss).toBeCloseTo(a.finalValLoss, 5);
      }
      const report = readFileSync(r.reportPath!, 'utf8');
      expect(report).toMatch(/\| tokens\/s \| val loss, eval causal \|/);
      // Two seeds per arm: mean [min-max] in the loss columns.
      expect(report).toMatch(/^\| expert-choice \| 2 \| \d+\.\d{4} \[\d+\.\d{4}-\d+\.\d{4}\] \|/m);
      expect(report).toMatch(/^\| top-2 \| 2 \| \d+\.\d{4} \[/m);
      expect(r.checks).toHaveLength(3);
      for (const c of r.checks) {
        expect(report).toContain(`| ${c.claim} | ${c.observed} | ${c.verdict}`);
        expect(['reproduced', 'not detected', 'contradicted']).toContain(c.verdict);
      }
      expect(report).toContain('threshold 2 x spread');
      expect(report).toContain('switchyard-train experiment expert-choice --seeds 1234,1235');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
