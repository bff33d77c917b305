// refinePlacement: the TSDoc example, the invariants and "never worse" as property tests (both
// policies), nodes kept in the hierarchical case, maxSwaps, and input errors.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectMapsInvert, placementProblem } from '../../test/placements';
import { balancedness, type ExpertPlacement, type RebalanceOptions, rebalanceExperts } from './eplb';
import { refinePlacement } from './refine';

/** Slots per GPU, replica counts, the two maps, and (hierarchical) each expert's node as in `input`. */
function expectInvariants(
  load: number[][],
  input: ExpertPlacement,
  p: ExpertPlacement,
  o: RebalanceOptions,
): void {
  const slotsPerNode = o.replicas / o.nodes;
  expect(p.gpus).toBe(o.gpus);
  expect(p.policy).toBe(input.policy);
  // R slots (so R / P per GPU), every expert >= 1 replica, counts match the slots, maps invert
  expectMapsInvert(p, o.replicas, load[0]!.length);
  load.forEach((_, l) => {
    const slotsR = p.physToLog[l]!;
    if (input.policy === 'hierarchical') {
      // every replica stays on the node its expert had in the input
      const nodeOf = (slotsOf: readonly number[]) => slotsOf.map((e, s) => [e, Math.floor(s / slotsPerNode)]);
      const inputNode = new Map(nodeOf(input.physToLog[l]!).map(([e, n]) => [e!, n!]));
      for (const [e, n] of nodeOf(slotsR)) expect(n).toBe(inputNode.get(e!));
    }
  });
}

const maxLoads = (load: number[][], p: ExpertPlacement) =>
  balancedness(load, p).gpuLoad.map((loadP) => Math.max(...loadP));

/** Random topologies (both policies) with integer or real loads. */
const cases = fc
  .record({
    nodes: fc.integer({ min: 1, max: 3 }),
    gpusPerNode: fc.integer({ min: 1, max: 4 }),
    groupsPerNode: fc.integer({ min: 1, max: 3 }),
    groupSize: fc.integer({ min: 1, max: 3 }),
    extraSlotsPerGpu: fc.integer({ min: 0, max: 2 }),
    global: fc.boolean(),
  })
  .chain((t) => {
    const value = fc.oneof(fc.integer({ min: 0, max: 50 }), fc.double({ min: 0, max: 1e4, noNaN: true }));
    const groups = t.nodes * t.groupsPerNode;
    // one group over >= 2 nodes: the global policy, with the same experts and GPUs per node
    return t.global
      ? placementProblem(
          { ...t, nodes: Math.max(2, t.nodes), groups: 1, groupSize: groups * t.groupSize },
          value,
        )
      : placementProblem({ ...t, groups }, value);
  });

describe('refinePlacement', () => {
  it('runs its TSDoc example: one move lifts balancedness from 0.915 to 0.951', () => {
    const load = [[90, 132, 40, 61, 104, 165, 39, 4]];
    const p = rebalanceExperts(load, { replicas: 12, groups: 2, nodes: 2, gpus: 4 });
    const r = refinePlacement(load, p, { nodes: 2 });
    expect(balancedness(load, p).gpuLoad[0]).toEqual([167, 156, 173.5, 138.5]);
    expect(balancedness(load, r).gpuLoad[0]).toEqual([167, 156, 149, 163]);
    expect(balancedness(load, p).balancedness[0]!.toFixed(3)).toBe('0.915');
    expect(balancedness(load, r).balancedness[0]!.toFixed(3)).toBe('0.951');
    expect(r.moves).toEqual([1]);
    expect(r.replicaCounts[0]![4]).toBe(1);
    expect(r.replicaCounts[0]![5]).toBe(3);
  });

  it('swaps slots across GPUs in a global placement', () => {
    const load = [[90, 132, 40, 61, 104, 165, 39, 4]];
    const o = { replicas: 12, groups: 1, nodes: 1, gpus: 4 };
    const p = rebalanceExperts(load, o);
    const r = refinePlacement(load, p, { nodes: 1 });
    expect(r.swaps[0]).toBeGreaterThan(0);
    expect(r.replicaCounts).toEqual(p.replicaCounts);
    expect(Math.max(...balancedness(load, r).gpuLoad[0]!)).toBe(163);
    expectInvariants(load, p, r, o);
  });

  it('keeps every invariant and never raises any layer max GPU load (property)', () => {
    fc.assert(
      fc.property(cases, ({ load, o }) => {
        const p = rebalanceExperts(load, o);
        const r = refinePlacement(load, p, { nodes: o.nodes });
        expectInvariants(load, p, r, o);
        const before = maxLoads(load, p);
        maxLoads(load, r).forEach((m, l) => {
          expect(m).toBeLessThanOrEqual(before[l]!);
        });
      }),
      { numRuns: 300, seed: 16 },
    );
  });

  it('also never worsens a placement it did not make, e.g. one copy per expert plus round robin (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 100 }), { minLength: 6, maxLength: 6 }), (row) => {
        const load = [row];
        // 6 experts, 8 slots on 4 GPUs: experts 0 and 1 doubled, in slot order
        const physToLog = [[0, 1, 2, 3, 4, 5, 0, 1]];
        const p: ExpertPlacement = {
          physToLog,
          logToPhys: [
            [
              [0, 6],
              [1, 7],
              [2, -1],
              [3, -1],
              [4, -1],
              [5, -1],
            ],
          ],
          replicaCounts: [[2, 2, 1, 1, 1, 1]],
          gpus: 4,
          policy: 'global',
        };
        const r = refinePlacement(load, p);
        expectInvariants(load, p, r, { replicas: 8, groups: 1, nodes: 1, gpus: 4 });
        expect(maxLoads(load, r)[0]).toBeLessThanOrEqual(maxLoads(load, p)[0]!);
      }),
      { numRuns: 200, seed: 5 },
    );
  });

  it('takes at most maxSwaps steps per layer; 0 returns the input maps', () => {
    const load = [[90, 132, 40, 61, 104, 165, 39, 4]];
    const p = rebalanceExperts(load, { replicas: 12, groups: 1, nodes: 1, gpus: 4 });
    const none = refinePlacement(load, p, { nodes: 1, maxSwaps: 0 });
    expect(none.physToLog).toEqual(p.physToLog);
    expect(none.logToPhys).toEqual(p.logToPhys);
    expect(none.replicaCounts).toEqual(p.replicaCounts);
    const one = refinePlacement(load, p, { nodes: 1, maxSwaps: 1 });
    expect(one.swaps[0]! + one.moves[0]!).toBe(1);
  });

  it('does not change its input', () => {
    const load = [[90, 132, 40, 61, 104, 165, 39, 4]];
    const p = rebalanceExperts(load, { replicas: 12, groups: 2, nodes: 2, gpus: 4 });
    const copy = structuredClone(p);
    refinePlacement(load, p, { nodes: 2 });
    expect(p).toEqual(copy);
  });

  it('rejects bad input with errors that name the constraint', () => {
    const load = [[90, 132, 40, 61, 104, 165, 39, 4]];
    const p = rebalanceExperts(load, { replicas: 12, groups: 2, nodes: 2, gpus: 4 });
    expect(() => refinePlacement(load, p)).toThrow(
      /`options\.nodes` passed to refinePlacement\(\) must be the number of nodes for a hierarchical placement/,
    );
    expect(() => refinePlacement(load, p, { nodes: 3 })).toThrow(
      /`options\.nodes` passed to refinePlacement\(\) must be a divisor of placement\.gpus \(4\), got 3/,
    );
    expect(() => refinePlacement(load, p, { nodes: 2, maxSwaps: -1 })).toThrow(
      /`options\.maxSwaps` passed to refinePlacement\(\) must be an integer >= 0, got -1/,
    );
    expect(() => refinePlacement([[1, 2]], p, { nodes: 2 })).toThrow(/passed to balancedness\(\)/);
  });
});
