// EPLB: the reference's check value, a hand-worked global case, float32 ties, the invariants as
// property tests (both policies), balancedness, input errors, and the guide's example as written.
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { placementProblem } from '../../test/placements';
import { isPlanError } from '../errors';
import { balancedness, type ExpertPlacement, rebalanceExperts } from './eplb';

// deepseek-ai/EPLB README: 2 layers x 12 experts, 16 slots, 4 groups, 2 nodes, 8 GPUs.
const LOAD = [
  [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
  [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27],
];
const TOPOLOGY = { replicas: 16, groups: 4, nodes: 2, gpus: 8 };

/** Every structural invariant of a placement; `groupsOnNode` also checks the hierarchical policy's. */
function expectInvariants(
  load: number[][],
  p: ExpertPlacement,
  o: { replicas: number; groups: number; nodes: number; gpus: number },
): void {
  const experts = load[0]!.length;
  const slotsPerGpu = o.replicas / o.gpus;
  const maxReplicas = Math.max(...p.replicaCounts.flat());
  expect(p.physToLog).toHaveLength(load.length);
  load.forEach((_, l) => {
    const slotsR = p.physToLog[l]!;
    const countE = p.replicaCounts[l]!;
    // R slots, every expert >= 1 replica, the counts match the slots
    expect(slotsR).toHaveLength(o.replicas);
    expect(countE).toHaveLength(experts);
    expect(countE.every((c) => Number.isInteger(c) && c >= 1)).toBe(true);
    expect(countE.reduce((a, b) => a + b, 0)).toBe(o.replicas);
    const seen = new Array<number>(experts).fill(0);
    for (const e of slotsR) seen[e]! += 1;
    expect(seen).toEqual(countE);
    // R / gpus slots per GPU (slot s on GPU floor(s / S)), all GPUs used
    const perGpu = new Array<number>(o.gpus).fill(0);
    slotsR.forEach((_, s) => {
      perGpu[Math.floor(s / slotsPerGpu)]! += 1;
    });
    expect(perGpu).toEqual(new Array<number>(o.gpus).fill(slotsPerGpu));
    // logToPhys inverts physToLog: each slot once, at its expert, -1 past the count
    const mapEX = p.logToPhys[l]!;
    expect(mapEX).toHaveLength(experts);
    const slotSeen = new Array<number>(o.replicas).fill(0);
    mapEX.forEach((slots, e) => {
      expect(slots).toHaveLength(maxReplicas);
      slots.forEach((slot, k) => {
        if (k < countE[e]!) {
          expect(slotsR[slot]).toBe(e);
          slotSeen[slot]! += 1;
        } else {
          expect(slot).toBe(-1);
        }
      });
    });
    expect(slotSeen.every((n) => n === 1)).toBe(true);
    if (p.policy === 'hierarchical') {
      // every replica of a group's experts is on one node, G / N groups per node
      const groupSize = experts / o.groups;
      const slotsPerNode = o.replicas / o.nodes;
      const nodeOfGroup = new Map<number, Set<number>>();
      slotsR.forEach((e, s) => {
        const g = Math.floor(e / groupSize);
        const nodes = nodeOfGroup.get(g) ?? new Set<number>();
        nodes.add(Math.floor(s / slotsPerNode));
        nodeOfGroup.set(g, nodes);
      });
      expect([...nodeOfGroup.values()].every((nodes) => nodes.size === 1)).toBe(true);
      const groupsPerNode = new Array<number>(o.nodes).fill(0);
      for (const nodes of nodeOfGroup.values()) groupsPerNode[[...nodes][0]!]! += 1;
      expect(groupsPerNode).toEqual(new Array<number>(o.nodes).fill(o.groups / o.nodes));
    }
  });
}

describe('rebalanceExperts', () => {
  it('gives the reference check value (hierarchical policy)', () => {
    const p = rebalanceExperts(LOAD, TOPOLOGY);
    expect(p.policy).toBe('hierarchical');
    expect(p.physToLog).toEqual([
      [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
      [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1],
    ]);
    expect(p.replicaCounts).toEqual([
      [1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1],
      [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1],
    ]);
    // replica ranks in creation order: expert 5's first copy in slot 0, its second in slot 2
    expect(p.logToPhys[0]![5]).toEqual([0, 2]);
    expect(p.logToPhys[0]![0]).toEqual([12, -1]);
    expect(p.gpus).toBe(8);
    expectInvariants(LOAD, p, TOPOLOGY);
  });

  it('works a small global case as the reference would (by hand)', () => {
    // replicate: slots 0..3 = experts 0..3, then expert 0 twice (10/1, then 10/2 > 1).
    // pack 6 slots (3.33, 1, 1, 1, 3.33, 3.33) onto 2 GPUs in stable descending order 0, 4, 5, 1, 2, 3:
    // GPU 0 gets 0, 5, 3; GPU 1 gets 4, 1, 2 (ties go to the lower GPU).
    const p = rebalanceExperts([[10, 1, 1, 1]], { replicas: 6, groups: 1, nodes: 1, gpus: 2 });
    expect(p.physToLog).toEqual([[0, 0, 3, 0, 1, 2]]);
    expect(p.replicaCounts).toEqual([[3, 1, 1, 1]]);
    expect(p.logToPhys).toEqual([
      [
        [0, 3, 1],
        [4, -1, -1],
        [5, -1, -1],
        [2, -1, -1],
      ],
    ]);
  });

  it('uses the global policy when groups do not divide over nodes (as groups = nodes = 1)', () => {
    const o = { replicas: 16, groups: 3, nodes: 2, gpus: 8 };
    const p = rebalanceExperts(LOAD, o);
    expect(p.policy).toBe('global');
    const flat = rebalanceExperts(LOAD, { replicas: 16, groups: 1, nodes: 1, gpus: 8 });
    expect(p.physToLog).toEqual(flat.physToLog);
    expect(p.logToPhys).toEqual(flat.logToPhys);
    expect(p.replicaCounts).toEqual(flat.replicaCounts);
    expectInvariants(LOAD, p, o);
    // free to spread a group over nodes, the global policy balances this load at least as well here
    const hier = balancedness(LOAD, rebalanceExperts(LOAD, TOPOLOGY)).balancedness;
    const glob = balancedness(LOAD, p).balancedness;
    glob.forEach((b, l) => {
      expect(b).toBeGreaterThanOrEqual(hier[l]!);
    });
  });

  it('compares loads in float32 like the reference (ties there go to the lower expert)', () => {
    // 1 and 1 + 2^-30 are both 1 in float32: the extra replica goes to expert 0, not expert 1
    const p = rebalanceExperts([[1, 1 + 2 ** -30]], { replicas: 3, groups: 1, nodes: 1, gpus: 1 });
    expect(p.replicaCounts).toEqual([[2, 1]]);
    expect(p.physToLog).toEqual([[1, 0, 0]]); // one GPU: its slots still go heaviest first (1, then 1/2 twice)
  });

  it('keeps the invariants of the hierarchical policy (property)', () => {
    const topology = fc
      .record({
        nodes: fc.integer({ min: 1, max: 4 }),
        gpusPerNode: fc.integer({ min: 1, max: 4 }),
        groupsPerNode: fc.integer({ min: 1, max: 3 }),
        groupSize: fc.integer({ min: 1, max: 4 }),
        extraSlotsPerGpu: fc.integer({ min: 0, max: 2 }),
        layers: fc.integer({ min: 1, max: 3 }),
      })
      .chain((t) =>
        placementProblem(
          { ...t, groups: t.nodes * t.groupsPerNode },
          fc.oneof(fc.integer({ min: 0, max: 20 }), fc.double({ min: 0, max: 1e6, noNaN: true })),
        ),
      );
    fc.assert(
      fc.property(topology, ({ load, o }) => {
        const p = rebalanceExperts(load, o);
        expect(p.policy).toBe('hierarchical');
        expectInvariants(load, p, o);
      }),
      { numRuns: 200, seed: 16 },
    );
  });

  it('keeps the invariants of the global policy (property)', () => {
    const topology = fc
      .record({
        nodes: fc.integer({ min: 2, max: 4 }),
        gpusPerNode: fc.integer({ min: 1, max: 3 }),
        groups: fc.integer({ min: 1, max: 7 }),
        groupSize: fc.integer({ min: 1, max: 3 }),
        extraSlotsPerGpu: fc.integer({ min: 0, max: 2 }),
      })
      .filter((t) => t.groups % t.nodes !== 0)
      .chain((t) => placementProblem(t, fc.integer({ min: 0, max: 50 })));
    fc.assert(
      fc.property(topology, ({ load, o }) => {
        const p = rebalanceExperts(load, o);
        expect(p.policy).toBe('global');
        expectInvariants(load, p, o);
      }),
      { numRuns: 200, seed: 61 },
    );
  });

  it('replicates the heaviest expert: no expert could lose a replica to a heavier-per-replica one', () => {
    // global policy, one node: the final per-replica loads satisfy the greedy's stopping rule
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 1000 }), { minLength: 2, maxLength: 12 }), (row) => {
        const replicas = row.length + 5;
        const p = rebalanceExperts([row], { replicas, groups: 1, nodes: 1, gpus: 1 });
        const countE = p.replicaCounts[0]!;
        const perReplica = row.map((w, e) => w / countE[e]!);
        const minBeforeLast = Math.min(
          ...row.map((w, e) => (countE[e]! > 1 ? w / (countE[e]! - 1) : Infinity)),
        );
        expect(Math.max(...perReplica)).toBeLessThanOrEqual(minBeforeLast * (1 + 1e-6));
      }),
      { numRuns: 100, seed: 7 },
    );
  });

  it('rejects bad input with errors that name the constraint', () => {
    const bad = (load: unknown, o: unknown) => () =>
      rebalanceExperts(load as number[][], o as typeof TOPOLOGY);
    expect(bad(LOAD, { ...TOPOLOGY, replicas: 12 })).toThrow(
      /`options\.replicas` passed to rebalanceExperts\(\) must be a multiple of options\.gpus \(8\).*got 12/,
    );
    expect(bad(LOAD, { ...TOPOLOGY, gpus: 3, replicas: 12 })).toThrow(
      /`options\.gpus` .* must be a multiple of options\.nodes \(2\), got 3/,
    );
    expect(bad(LOAD, { ...TOPOLOGY, groups: 5 })).toThrow(
      /`options\.groups` .* must be a divisor of the number of experts \(12\), got 5/,
    );
    expect(bad(LOAD, { ...TOPOLOGY, replicas: 8 })).toThrow(
      /`options\.replicas` .* must be >= the number of experts \(12\).*got 8/,
    );
    expect(
      bad(
        [
          [1, 2, 3, 4],
          [1, 2, 3],
        ],
        { replicas: 4, groups: 1, nodes: 1, gpus: 1 },
      ),
    ).toThrow(/`load\[1\]\.length` .* must be 4 \(the length of load\[0\]; rows must not be ragged\), got 3/);
    expect(bad([[1, -2]], { replicas: 2, groups: 1, nodes: 1, gpus: 1 })).toThrow(
      /`load\[0\]\[1\]` .* must be a finite number >= 0 .*got -2/,
    );
    expect(bad([[1, Number.NaN]], { replicas: 2, groups: 1, nodes: 1, gpus: 1 })).toThrow(
      /`load\[0\]\[1\]`.*got NaN/,
    );
    expect(bad([[1, Infinity]], { replicas: 2, groups: 1, nodes: 1, gpus: 1 })).toThrow(/got Infinity/);
    expect(bad([[1, 1e39]], { replicas: 2, groups: 1, nodes: 1, gpus: 1 })).toThrow(/float32.*got 1e\+39/);
    expect(bad([], TOPOLOGY)).toThrow(/`load` .* must be a non-empty array of layers/);
    expect(bad(LOAD, { ...TOPOLOGY, nodes: 0 })).toThrow(
      /`options\.nodes` .* must be an integer >= 1, got 0/,
    );
    try {
      bad(LOAD, { ...TOPOLOGY, replicas: 12 })();
    } catch (e) {
      expect(isPlanError(e) && e.code).toBe('INVALID_ARGUMENT');
    }
  });
});

describe('balancedness', () => {
  it('gives mean/max and max/mean of the GPU loads on the check value', () => {
    const b = balancedness(LOAD, rebalanceExperts(LOAD, TOPOLOGY));
    expect(b.gpuLoad).toEqual([
      [121.5, 86.5, 125, 113, 147.5, 131.5, 156, 152],
      [173, 179.5, 120.5, 172, 123, 152, 118.5, 117.5],
    ]);
    // totals 1033 and 1156 over 8 GPUs
    expect(b.balancedness[0]).toBeCloseTo(1033 / 8 / 156, 12);
    expect(b.balancedness[1]).toBeCloseTo(1156 / 8 / 179.5, 12);
    expect(b.imbalanceRatio[0]).toBeCloseTo(156 / (1033 / 8), 12);
    expect(b.imbalanceRatio[1]).toBeCloseTo(179.5 / (1156 / 8), 12);
  });

  it('is 1 for a perfect placement and for a layer with no load; the GPU loads keep the total', () => {
    const one = rebalanceExperts([[4, 4, 4, 4]], { replicas: 4, groups: 1, nodes: 1, gpus: 4 });
    expect(balancedness([[4, 4, 4, 4]], one)).toEqual({
      gpuLoad: [[4, 4, 4, 4]],
      balancedness: [1],
      imbalanceRatio: [1],
    });
    const zero = rebalanceExperts([[0, 0]], { replicas: 4, groups: 1, nodes: 1, gpus: 2 });
    expect(balancedness([[0, 0]], zero).balancedness).toEqual([1]);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 100 }), { minLength: 8, maxLength: 8 }), (row) => {
        const b = balancedness(
          [row],
          rebalanceExperts([row], { replicas: 12, groups: 4, nodes: 2, gpus: 4 }),
        );
        const total = row.reduce((a, c) => a + c, 0);
        expect(b.gpuLoad[0]!.reduce((a, c) => a + c, 0)).toBeCloseTo(total, 9);
        expect(b.balancedness[0]).toBeGreaterThan(0);
        expect(b.balancedness[0]).toBeLessThanOrEqual(1);
        expect(b.imbalanceRatio[0]! * b.balancedness[0]!).toBeCloseTo(1, 12);
      }),
      { numRuns: 100, seed: 3 },
    );
  });

  it('beats one copy per expert on a skewed load', () => {
    // plain EP: 12 experts on 4 GPUs, 3 each, no replicas; EPLB: 16 slots on 4 GPUs
    const load = [[500, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20]];
    const plain = {
      physToLog: [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]],
      replicaCounts: [load[0]!.map(() => 1)],
      gpus: 4,
    };
    const eplb = rebalanceExperts(load, { replicas: 16, groups: 1, nodes: 1, gpus: 4 });
    expect(balancedness(load, eplb).balancedness[0]).toBeGreaterThan(
      balancedness(load, plain).balancedness[0]! + 0.3,
    );
  });

  it('rejects a placement that does not fit the load', () => {
    const p = rebalanceExperts(LOAD, TOPOLOGY);
    expect(() => balancedness([LOAD[0]!], p)).toThrow(
      /`placement` passed to balancedness\(\) must be maps with one row per layer of load \(1\)/,
    );
    expect(() => balancedness(LOAD, { ...p, gpus: 5 })).toThrow(
      /`placement\.physToLog\[0\]\.length` .* a multiple of gpus \(5\), got 16/,
    );
  });
});

describe('the guide section "Expert placement (EPLB)"', () => {
  it('runs its code example as written', () => {
    const page = readFileSync(new URL('../../../../docs/guide/plan.md', import.meta.url), 'utf8');
    const section = page.slice(page.indexOf('## Expert placement (EPLB)'));
    const code = /```ts\n([\s\S]*?)```/.exec(section)![1]!;
    const logged: unknown[] = [];
    const run = new Function(
      'rebalanceExperts',
      'balancedness',
      'console',
      code.replace(/^import .*$/gm, ''),
    );
    run(rebalanceExperts, balancedness, { log: (x: unknown) => logged.push(x) });
    expect(logged[0]).toEqual([5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1]);
    expect(logged[1]).toEqual([1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1]);
    expect(logged[2]).toBe('0.828');
  });
});
