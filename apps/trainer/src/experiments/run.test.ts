import { describe, expect, it } from 'vitest';
import type { ArmResult } from './claims';
import { EXPERIMENTS } from './definitions';
import { armConfig, checkClaims, topKShare } from './run';

function arm(id: string, over: Partial<ArmResult>): ArmResult {
  return {
    id,
    label: id,
    steps: 10,
    finalValLoss: 5,
    unigramValLoss: 6,
    maxVioGlobal: 0.3,
    maxVioBatch: 0.3,
    maxVioMicro: 0.4,
    specializationPeak: 1.5,
    topKShare: 0.3,
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
      }
    }
    const bs = EXPERIMENTS['balance-scope']!;
    const c = armConfig(bs, bs.arms[1]!, '/tmp/x');
    expect(c.data.batching).toBe('domain');
    expect(c.train.gradAccum).toBeGreaterThanOrEqual(8);
    expect(c.balance.method).toBe('global');
    const lf = EXPERIMENTS['loss-free']!;
    expect(armConfig(lf, lf.arms[0]!, '/tmp/x').model.moe.router.type).toBe('sigmoid');
  });
});

describe('checkClaims', () => {
  it('counts an effect only beyond the margins', () => {
    const arms = [
      arm('micro', { finalValLoss: 5.0, maxVioMicro: 0.4, topKShare: 0.3, specializationPeak: 1.6 }),
      arm('global', { finalValLoss: 4.95, maxVioMicro: 0.8, topKShare: 0.45, specializationPeak: 2.4 }),
      arm('shuffled', { finalValLoss: 4.96 }),
      arm('global-local', { finalValLoss: 4.95, maxVioMicro: 0.6 }),
    ];
    expect(checkClaims('balance-scope', arms).map((c) => c.holds)).toEqual([true, true, true, true]);
    const close = arms.map((a) => (a.id === 'global' ? { ...a, finalValLoss: 4.995 } : a));
    expect(checkClaims('balance-scope', close)[0]!.holds).toBe(false);
  });

  it('checks the capacity ordering of drop rates and losses', () => {
    const arms = [
      arm('cf-1.0', { trainDropRate: 0.1, finalValLoss: 5.2 }),
      arm('cf-1.25', { trainDropRate: 0.05, finalValLoss: 5.1 }),
      arm('cf-2.0', { trainDropRate: 0.01, finalValLoss: 5.05 }),
      arm('dropless', { trainDropRate: 0, finalValLoss: 5.0 }),
    ];
    expect(checkClaims('capacity', arms).map((c) => c.holds)).toEqual([true, true, null]);
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
