// HybridEP: migration byte counts (SPEC §4's compression ratio), the break-even point, byte
// accounting of plain EP, one DC sends nothing, never slower than sending tokens (property), the
// trends (bandwidth, tokens per expert), the GPU level of a DC, the priority of background
// transfers in runStreams, and input errors.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HARDWARE_PRESETS } from '../cluster/hardware';
import { DEEPSEEK_V3, type ModelSpec } from '../cluster/model';
import { runStreams } from '../cluster/streams';
import { isPlanError } from '../errors';
import { type HybridEpOptions, hybridEpDatacenterPlacement, migrationBytes, planHybridEp } from './hybridep';

/** A small MoE model: 16 experts of 256 x 512, top-2. */
const SMALL: ModelSpec = {
  ...DEEPSEEK_V3,
  name: 'small',
  hidden: 256,
  expertIntermediate: 512,
  experts: 16,
  topK: 2,
  sharedIntermediate: 0,
  attention: { kind: 'gqa', heads: 4, kvHeads: 2, headDim: 64 },
};

const uniform = (layers: number, experts: number) =>
  Array.from({ length: layers }, () => new Array<number>(experts).fill(1));
const zipf = (layers: number, experts: number) =>
  Array.from({ length: layers }, (_, l) =>
    Array.from({ length: experts }, (_, e) => 1 / (((e + 3 * l) % experts) + 1)),
  );

/** Options for SMALL on `dcs` DCs at `gbps` per DC, `perExpert` tokens per (DC, expert) under uniform load. */
function options(
  dcs: number,
  gbps: number,
  perExpert: number,
  extra: Partial<HybridEpOptions> = {},
): HybridEpOptions {
  return {
    model: SMALL,
    hardware: HARDWARE_PRESETS.h800,
    datacenters: dcs,
    wan: { alpha: 5e-3, beta: (gbps * 1e9) / 8 },
    tokensPerDatacenter: (perExpert * SMALL.experts) / SMALL.topK,
    ...extra,
  };
}

describe('migrationBytes', () => {
  it('counts BF16, FP8 and low-rank migrations; a whole group compresses by the SPEC ratio', () => {
    const m = { hidden: 4096, expertIntermediate: 4096 };
    const params = 3 * 4096 * 4096;
    expect(migrationBytes(m, { kind: 'bf16' })).toEqual({
      weights: 2 * params,
      gradients: 2 * params,
      basis: 0,
      bf16Weights: 2 * params,
    });
    expect(migrationBytes(m, { kind: 'fp8' }).weights).toBe(params * 1.03125);
    const lr = migrationBytes(m, { kind: 'low-rank', rank: 16, groupSize: 8 });
    expect(lr.weights).toBe(3 * 16 * 8192 * 2);
    expect(lr.basis).toBe(2 * params);
    // K = 8 experts of 4096 x 4096 at rank 16: K / (1 + K r (1/d_in + 1/d_out)) = 7.53x (SPEC §4)
    const ratio = (8 * lr.bf16Weights) / (lr.basis + 8 * lr.weights);
    expect(ratio).toBeCloseTo(8 / (1 + 8 * 16 * (2 / 4096)), 12);
    expect(ratio).toBeCloseTo(7.53, 2);
  });

  it('rejects an unknown encoding or a rank larger than the expert', () => {
    expect(() => migrationBytes(SMALL, { kind: 'int4' } as never)).toThrow(/`encoding.kind`/);
    expect(() => migrationBytes(SMALL, { kind: 'low-rank', rank: 300, groupSize: 4 })).toThrow(
      /`encoding.rank` passed to migrationBytes\(\) must be an integer in \[1, 256\], got 300/,
    );
  });
});

describe('planHybridEp', () => {
  it('breaks even at P / (2 D) tokens per (DC, expert): migrates well above, not below', () => {
    const load = uniform(2, 16);
    const plan = planHybridEp(load, options(4, 1, 100));
    // P = 3 D F, 2 bytes each way vs 4 D * 2 bytes per token: 3 F / 2 = 768
    expect(plan.breakEvenTokens).toBe(768);
    expect(plan.layers.every((x) => x.migrations === 0)).toBe(true);
    const above = planHybridEp(load, options(4, 1, 4 * 768));
    expect(above.layers.every((x) => x.migrations === 4 * 12)).toBe(true); // every DC, every expert it lacks
    expect(above.wanBytes.tokens).toBe(0);
    const ep = planHybridEp(load, options(4, 1, 4 * 768, { strategy: 'ep' }));
    expect(ep.stepTime / above.stepTime).toBeGreaterThan(3);
  });

  it('counts plain EP tokens: each DC sends 4 K T (1 - 1/S) token copies per layer', () => {
    const plan = planHybridEp(uniform(3, 16), options(8, 10, 64, { strategy: 'ep' }));
    expect(plan.domainSize).toBe(8);
    const T = (64 * 16) / 2;
    const perLayer = 8 * 4 * T * 2 * (1 - 1 / 8) * 256 * 2;
    expect(plan.wanBytes.tokens).toBeCloseTo(3 * perLayer, 3);
    expect(plan.wanBytes.migration).toBe(0);
    expect(plan.layers[0]!.expertShare).toBe(0);
    // 2 domains of 4 DCs: tokens stay in their domain
    const two = planHybridEp(uniform(3, 16), options(8, 10, 64, { strategy: 'ep', domainSize: 4 }));
    expect(two.homes).toHaveLength(2);
    expect(two.wanBytes.tokens).toBeCloseTo((3 * perLayer * (1 - 1 / 4)) / (1 - 1 / 8), 3);
  });

  it('sends nothing over the WAN with one DC', () => {
    const plan = planHybridEp(zipf(2, 16), options(1, 1, 1000));
    expect(plan.wanBytes).toEqual({ tokens: 0, migration: 0 });
    expect(plan.layers.every((x) => x.migrations === 0)).toBe(true);
  });

  it('is never slower than sending tokens from the same homes, and never migrates what a DC holds (property)', () => {
    const cases = fc.record({
      dcs: fc.constantFrom(2, 3, 4, 6),
      gbps: fc.constantFrom(0.1, 1, 10, 100, 1000),
      perExpert: fc.integer({ min: 10, max: 5000 }),
      skew: fc.boolean(),
      migration: fc.constantFrom(
        { kind: 'bf16' } as const,
        { kind: 'fp8' } as const,
        { kind: 'low-rank', rank: 8, groupSize: 4 } as const,
      ),
    });
    fc.assert(
      fc.property(cases, (c) => {
        const load = c.skew ? zipf(2, 16) : uniform(2, 16);
        const o = options(c.dcs, c.gbps, c.perExpert, { migration: c.migration });
        const hybrid = planHybridEp(load, o);
        const eplb = planHybridEp(load, { ...o, strategy: 'eplb' });
        expect(hybrid.stepTime).toBeLessThanOrEqual(eplb.stepTime * (1 + 1e-12));
        expect(eplb.layers.every((x) => x.migrations === 0)).toBe(true);
        hybrid.migrated.forEach((flags, l) => {
          const home = hybrid.homes[0]!;
          const u = home.physToLog[l]!.length / hybrid.domainSize;
          home.physToLog[l]!.forEach((e, slot) => {
            expect(flags[Math.floor(slot / u) * 16 + e]).toBe(0);
          });
        });
      }),
      { numRuns: 40, seed: 5 },
    );
  });

  it('gains more with more tokens per expert, and about nothing at very high bandwidth', () => {
    const load = zipf(2, 16);
    const speedup = (gbps: number, perExpert: number) =>
      planHybridEp(load, options(8, gbps, perExpert, { strategy: 'ep' })).stepTime /
      planHybridEp(load, options(8, gbps, perExpert)).stepTime;
    const byTokens = [100, 400, 1600, 6400].map((n) => speedup(1, n));
    for (let i = 1; i < byTokens.length; i++)
      expect(byTokens[i]).toBeGreaterThanOrEqual(byTokens[i - 1]! - 1e-9);
    expect(byTokens.at(-1)).toBeGreaterThan(2);
    expect(speedup(1e7, 1600)).toBeLessThan(1.05);
  });

  it('places a DC of the plan on its GPUs: its homes and the experts migrated to it', () => {
    const load = zipf(2, 16);
    const o = options(4, 1, 3000, { gpusPerDatacenter: 4 });
    const plan = planHybridEp(load, o);
    const dc = hybridEpDatacenterPlacement(plan, load, o, 1);
    dc.experts.forEach((resident, l) => {
      const migratedHere = resident.filter((e) => plan.migrated[l]![16 + e] === 1);
      expect(migratedHere.length).toBeGreaterThan(0);
      expect(new Set(resident).size).toBe(resident.length);
      const p = dc.placements[l]!;
      expect(p.gpus).toBe(4);
      expect(p.physToLog[0]!.length % 4).toBe(0);
      expect(new Set(p.physToLog[0]).size).toBe(resident.length);
      expect(dc.load[l]!.every((x) => x > 0)).toBe(true);
    });
    expect(() => hybridEpDatacenterPlacement(plan, load, o, 4)).toThrow(/`dc` .* in \[0, 3\], got 4/);
  });

  it('rejects inputs that do not fit, naming the constraint', () => {
    const load = uniform(1, 16);
    const expectError = (o: Partial<HybridEpOptions>, re: RegExp, l = load) => {
      try {
        planHybridEp(l, { ...options(4, 1, 100), ...o });
        expect.unreachable();
      } catch (e) {
        expect(isPlanError(e)).toBe(true);
        expect((e as Error).message).toMatch(re);
      }
    };
    expectError({ domainSize: 3 }, /`options.domainSize` .* a divisor of options.datacenters \(4\), got 3/);
    expectError({ model: DEEPSEEK_V3 }, /`options.model.experts` .* the experts of load \(16\), got 256/);
    expectError(
      { migration: { kind: 'low-rank', rank: 4, groupSize: 5 } },
      /`options.migration.groupSize` .* divisor of the experts \(16\), got 5/,
    );
    expectError({ wan: { alpha: 0, beta: 0 } }, /`options.wan`/);
    expectError({ tokensPerDatacenter: -1 }, /`options.tokensPerDatacenter`/);
    expectError({}, /ragged/, [new Array(16).fill(1), [1]]);
    expectError(
      { datacenterLoad: [[new Array(16).fill(1)]] },
      /`options.datacenterLoad\[0\].length` .* 4 \(the datacenters\), got 1/,
    );
  });
});

describe('runStreams priorities', () => {
  it('lets a waiting transfer go before a background one, and background fills the gaps', () => {
    const run = runStreams([
      { stream: 'compute', duration: 2, deps: [], label: 'attn' },
      { stream: 'comm', duration: 1, deps: [], label: 'prefetch-a', priority: 1 },
      { stream: 'comm', duration: 1, deps: [], label: 'prefetch-b', priority: 1 },
      { stream: 'comm', duration: 1, deps: [0], label: 'dispatch' },
      { stream: 'comm', duration: 1, deps: [], label: 'prefetch-c', priority: 1 },
    ]);
    // prefetches a and b fill [0, 2) while attention runs; at 2 the dispatch (priority 0) goes
    // before prefetch c although c was ready first
    expect(run.starts).toEqual([0, 0, 1, 2, 3]);
    expect(run.makespan).toBe(4);
  });
});
