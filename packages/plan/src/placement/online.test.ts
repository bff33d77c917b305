// Online rebalancing: the TSDoc example, alignment (fewest moves, same balance, maps intact,
// groups kept on a node) as a property, the time rule both ways, the rebalancer's smoothing and
// first window, and input errors.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectMapsInvert, placementProblem } from '../../test/placements';
import { balancedness, rebalanceExperts } from './eplb';
import { decideRebalance, type OnlineRebalanceOptions, OnlineRebalancer } from './online';

const COSTS = { expertBytes: 1e8, moveBandwidth: 1e10, expertSecondsPerStep: 0.2, horizonSteps: 100 };
const SKEWED = [[90, 132, 40, 61, 104, 165, 39, 4]];
const FLAT = [[1, 1, 1, 1, 1, 1, 1, 1]];

describe('decideRebalance', () => {
  it('runs the TSDoc example: re-places a flat placement for a skewed load, then stays', () => {
    const o: OnlineRebalanceOptions = { replicas: 12, groups: 1, nodes: 2, gpus: 4, ...COSTS };
    const d = decideRebalance(rebalanceExperts(FLAT, o), SKEWED, o);
    expect(d.replace).toBe(true);
    expect(d.moves).toHaveLength(7);
    expect(d.bytesMoved).toBe(7e8);
    expect(d.moveSeconds).toBeCloseTo(0.07, 12);
    expect(d.savedSeconds).toBeCloseTo(16.378, 3);
    expect(d.reason).toMatch(/^saves 16.378 s over 100 steps for 0.070 s of moves$/);
    const again = decideRebalance(d.placement, SKEWED, o);
    expect(again.replace).toBe(false);
    expect(again.moves).toEqual([]);
    expect(again.reason).toBe('the candidate is the current placement');
  });

  it('weighs saved time against move time: dear moves, a short horizon or minGain keep the placement', () => {
    const o: OnlineRebalanceOptions = { replicas: 12, groups: 1, nodes: 2, gpus: 4, ...COSTS };
    const current = rebalanceExperts(FLAT, o);
    expect(decideRebalance(current, SKEWED, { ...o, expertBytes: 1e12 }).replace).toBe(false);
    const short = decideRebalance(current, SKEWED, { ...o, horizonSteps: 1, moveBandwidth: 1e9 });
    expect(short.replace).toBe(false);
    expect(short.reason).toMatch(/^saves 0.164 s over 1 steps, moves take 0.700 s$/);
    const picky = decideRebalance(current, SKEWED, { ...o, minGain: 0.5 });
    expect(picky.replace).toBe(false);
    expect(picky.reason).toMatch(/balancedness gain 0.4161 < minGain 0.5/);
    expect(picky.placement).toBe(current);
  });

  it('aligns the candidate: same balance as EPLB, maps whole, groups on one node, no more moves than unaligned (property)', () => {
    const problem = fc
      .record({
        nodes: fc.integer({ min: 1, max: 3 }),
        gpusPerNode: fc.integer({ min: 1, max: 3 }),
        groupsPerNode: fc.integer({ min: 1, max: 2 }),
        groupSize: fc.integer({ min: 1, max: 3 }),
        extraSlotsPerGpu: fc.integer({ min: 0, max: 2 }),
        layers: fc.constant(2),
        hierarchical: fc.boolean(),
      })
      .chain((t) =>
        fc.record({
          before: placementProblem(
            { ...t, groups: t.nodes * t.groupsPerNode },
            fc.integer({ min: 0, max: 30 }),
          ),
          after: placementProblem(
            { ...t, groups: t.nodes * t.groupsPerNode },
            fc.integer({ min: 0, max: 30 }),
          ),
          hierarchical: fc.constant(t.hierarchical),
        }),
      );
    fc.assert(
      fc.property(problem, ({ before, after, hierarchical }) => {
        const o = { ...before.o, groups: hierarchical ? before.o.groups : 1, ...COSTS };
        const current = rebalanceExperts(before.load, o);
        const d = decideRebalance(current, after.load, o);
        const eplb = rebalanceExperts(after.load, o);
        const experts = after.load[0]!.length;
        expectMapsInvert(d.candidate, o.replicas, experts);
        expect(d.candidate.replicaCounts).toEqual(eplb.replicaCounts);
        const want = balancedness(after.load, eplb).balancedness;
        d.candidateBalancedness.forEach((b, l) => {
          expect(b).toBeCloseTo(want[l]!, 9);
        });
        const unaligned = eplb.physToLog.flat().filter((e, i) => e !== current.physToLog.flat()[i]).length;
        expect(d.moves.length).toBeLessThanOrEqual(unaligned);
        for (const m of d.moves) expect(d.candidate.physToLog[m.layer]![m.slot]).toBe(m.to);
        if (eplb.policy === 'hierarchical') {
          const groupSize = experts / o.groups;
          const slotsPerNode = o.replicas / o.nodes;
          d.candidate.physToLog.forEach((slots) => {
            const nodeOf = new Map<number, Set<number>>();
            slots.forEach((e, s) => {
              const g = Math.floor(e / groupSize);
              nodeOf.set(g, (nodeOf.get(g) ?? new Set()).add(Math.floor(s / slotsPerNode)));
            });
            for (const ns of nodeOf.values()) expect(ns.size).toBe(1);
          });
        }
      }),
      { numRuns: 100, seed: 12 },
    );
  });

  it('rejects a placement of another topology and bad costs', () => {
    const o: OnlineRebalanceOptions = { replicas: 12, groups: 1, nodes: 2, gpus: 4, ...COSTS };
    const other = rebalanceExperts(FLAT, { replicas: 16, groups: 1, nodes: 2, gpus: 4 });
    expect(() => decideRebalance(other, SKEWED, o)).toThrow(
      /`current` passed to decideRebalance\(\) must be a placement of 12 slots on 4 GPUs/,
    );
    expect(() => decideRebalance(other, SKEWED, { ...o, moveBandwidth: 0 })).toThrow(
      /`options.moveBandwidth`/,
    );
    expect(() => decideRebalance(other, SKEWED, { ...o, smoothing: 2 })).toThrow(/`options.smoothing`/);
  });
});

describe('OnlineRebalancer', () => {
  it('places the first window, smooths later ones, and adopts what it decides', () => {
    const o: OnlineRebalanceOptions = {
      replicas: 12,
      groups: 1,
      nodes: 2,
      gpus: 4,
      ...COSTS,
      smoothing: 0.5,
    };
    const r = new OnlineRebalancer(o);
    expect(r.placement).toBeUndefined();
    const first = r.observe(FLAT);
    expect(first.replace).toBe(true);
    expect(first.moves).toHaveLength(12);
    expect(first.moves.every((m) => m.from === -1)).toBe(true);
    const second = r.observe(SKEWED);
    expect(r.load).toEqual([SKEWED[0]!.map((x) => (x + 1) / 2)]);
    expect(second.replace).toBe(true);
    expect(r.placement).toBe(second.placement);
    expect(() => r.observe([[1, 2, 3]])).toThrow(
      /`countsLE` passed to OnlineRebalancer.observe\(\) must be \[1\]\[8\] counts/,
    );
  });
});
