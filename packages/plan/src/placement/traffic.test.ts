// Cross-node traffic: sampled traces keep group-limited routing, a hand-counted placement, the
// node limit of hierarchical placements, consistency with EPLB's balancedness under `spread`, and
// localizePlacement's guarantees (never more bytes, max load within bound, maps intact) as
// property tests; input errors and the TSDoc examples.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectMapsInvert, placementProblem } from '../../test/placements';
import { isPlanError } from '../errors';
import { balancedness, type ExpertPlacement, rebalanceExperts } from './eplb';
import { refinePlacement } from './refine';
import { localizePlacement, placementTraffic, type RoutingTrace, sampleRoutingTrace } from './traffic';

const LOAD8 = [[90, 132, 40, 61, 104, 165, 39, 4]];

/** A placement from its slots alone (replica counts and maps derived). */
function placementOf(physToLog: number[][], gpus: number, experts: number): ExpertPlacement {
  const replicaCounts = physToLog.map((slots) => {
    const c = new Array<number>(experts).fill(0);
    for (const e of slots) c[e]! += 1;
    return c;
  });
  const maxReplicas = Math.max(...replicaCounts.flat());
  const logToPhys = physToLog.map((slots, l) => {
    const m = replicaCounts[l]!.map(() => new Array<number>(maxReplicas).fill(-1));
    const next = new Array<number>(experts).fill(0);
    slots.forEach((e, s) => {
      m[e]![next[e]!++] = s;
    });
    return m;
  });
  return { physToLog, logToPhys, replicaCounts, gpus, policy: 'global' };
}

describe('sampleRoutingTrace', () => {
  it('draws K distinct experts per token from at most M groups, reproducibly', () => {
    const load = [
      [5, 1, 1, 1, 9, 2, 2, 2, 1, 1, 1, 1],
      [0, 0, 0, 0, 3, 3, 3, 3, 1, 2, 3, 4],
    ];
    const o = { tokens: 500, topK: 3, groups: 3, groupsPerToken: 1, seed: 5 };
    const trace = sampleRoutingTrace(load, o);
    expect(trace.topK).toBe(3);
    expect(trace.experts).toHaveLength(2);
    trace.experts.forEach((row, l) => {
      expect(row).toHaveLength(1500);
      for (let t = 0; t < 500; t++) {
        const picks = Array.from({ length: 3 }, (_, k) => row[t * 3 + k]!);
        expect(new Set(picks).size).toBe(3);
        expect(new Set(picks.map((e) => Math.floor(e / 4))).size).toBe(1);
        // a zero-load group is never chosen while others have load
        if (l === 1) expect(picks.every((e) => e >= 4)).toBe(true);
      }
    });
    expect(sampleRoutingTrace(load, o)).toEqual(trace);
    expect(sampleRoutingTrace(load, { ...o, seed: 6 })).not.toEqual(trace);
  });

  it('follows the loads: the heaviest expert is picked most', () => {
    const trace = sampleRoutingTrace([[1, 8, 1, 1, 1, 1, 1, 1]], { tokens: 4000, topK: 1 });
    const count = new Array<number>(8).fill(0);
    for (const e of Array.from(trace.experts[0]!)) count[e]! += 1;
    // p(1) = 8 / 15 = 0.533 of 4000 picks; 5 standard deviations is +-158
    expect(Math.abs(count[1]! - 4000 * (8 / 15))).toBeLessThan(158);
  });

  it('rejects what it cannot draw, naming the constraint', () => {
    const call = (o: object) => () => sampleRoutingTrace(LOAD8, { tokens: 10, topK: 2, ...o });
    expect(call({ groups: 3 })).toThrow(
      /`options.groups` passed to sampleRoutingTrace\(\) must be a divisor of the number of experts \(8\), got 3/,
    );
    expect(call({ groups: 4, groupsPerToken: 1, topK: 3 })).toThrow(
      /`options.topK` .* must be an integer in \[1, 2\], got 3/,
    );
    expect(call({ groupsPerToken: 2 })).toThrow(/`options.groupsPerToken` .* in \[1, 1\], got 2/);
    expect(() => sampleRoutingTrace([[1, 2], [1]], { tokens: 1, topK: 1 })).toThrow(/ragged/);
  });
});

describe('placementTraffic', () => {
  // 2 nodes x 1 GPU x 2 slots: node 0 holds experts 0, 1; node 1 holds 2 and a second copy of 0.
  const placement = placementOf([[0, 1, 2, 0]], 2, 3);
  // tokens alternate GPUs (t mod 2): token 0 on node 0, token 1 on node 1, ...
  const trace: RoutingTrace = { topK: 2, experts: [[0, 1, 0, 1, 1, 2, 2, 0]] };

  it('counts remote nodes and GPU loads by hand (node-local replicas first)', () => {
    const t = placementTraffic(placement, trace, { nodes: 2, bytesPerToken: 100 });
    // token 0 (node 0): 0 and 1 both local -> 0; token 1 (node 1): 0 local, 1 on node 0 -> 1;
    // token 2 (node 0): 1 local, 2 on node 1 -> 1; token 3 (node 1): both local -> 0
    expect(t.remoteNodesPerToken).toEqual([0.5]);
    expect(t.crossNodeBytes).toEqual([200]);
    expect(t.localShare).toEqual([6 / 8]);
    // expert 0: 1 pick from node 0 to its node-0 copy, 2 from node 1 to its node-1 copy;
    // expert 1: 3 picks, all on GPU 0; expert 2: 2 picks on GPU 1
    expect(t.gpuLoad).toEqual([[4, 4]]);
    expect(t.balancedness).toEqual([1]);
  });

  it('spreads over all replicas with replicaChoice spread (EPLB balancedness on the trace counts)', () => {
    const t = placementTraffic(placement, trace, { nodes: 2, replicaChoice: 'spread' });
    // token 1 (node 1): expert 0 goes to node 0 half the time, expert 1 always: node 0 hit 1;
    // token 0 (node 0): expert 0 to node 1 with 1/2; token 2: 2 remote (1); token 3 (node 1):
    // 2 local, 0 to node 0 with 1/2
    expect(t.remoteNodesPerToken[0]).toBeCloseTo((0.5 + 1 + 1 + 0.5) / 4, 12);
    const counts = [[3, 3, 2]];
    expect(t.gpuLoad).toEqual(balancedness(counts, placement).gpuLoad);
  });

  it('sends nothing across nodes on one node', () => {
    const t = placementTraffic(placement, trace, { nodes: 1 });
    expect(t.crossNodeBytes).toEqual([0]);
    expect(t.localShare).toEqual([1]);
  });

  it('keeps hierarchical placements within the node limit and conserves load (property)', () => {
    const problem = fc
      .record({
        nodes: fc.integer({ min: 2, max: 4 }),
        gpusPerNode: fc.integer({ min: 1, max: 3 }),
        groupSize: fc.integer({ min: 2, max: 4 }),
        extraSlotsPerGpu: fc.integer({ min: 0, max: 2 }),
        layers: fc.constant(2),
        groupsPerToken: fc.integer({ min: 1, max: 2 }),
        seed: fc.integer({ min: 0, max: 1000 }),
      })
      .chain((t) =>
        placementProblem({ ...t, groups: t.nodes }, fc.integer({ min: 1, max: 50 })).map((p) => ({
          ...p,
          t,
        })),
      );
    fc.assert(
      fc.property(problem, ({ load, o, t }) => {
        const topK = Math.min(2, t.groupsPerToken * t.groupSize);
        const trace = sampleRoutingTrace(load, {
          tokens: 60,
          topK,
          groups: o.groups,
          groupsPerToken: t.groupsPerToken,
          seed: t.seed,
        });
        const hier = rebalanceExperts(load, o);
        for (const choice of ['node-local', 'spread'] as const) {
          const traffic = placementTraffic(hier, trace, { nodes: o.nodes, replicaChoice: choice });
          traffic.gpuLoad.forEach((loadP, l) => {
            // every assignment is served somewhere
            expect(loadP.reduce((a, b) => a + b, 0)).toBeCloseTo(60 * topK, 6);
            // group-limited routing over groups that live on one node each: <= M remote nodes,
            // and the token's own group never costs anything
            expect(traffic.remoteNodesPerToken[l]).toBeLessThanOrEqual(t.groupsPerToken + 1e-9);
            expect(traffic.balancedness[l]).toBeGreaterThan(0);
            expect(traffic.balancedness[l]).toBeLessThanOrEqual(1 + 1e-12);
          });
        }
      }),
      { numRuns: 60, seed: 23 },
    );
  });
});

describe('localizePlacement', () => {
  it('never sends more, keeps max load within bound and keeps the maps whole (property)', () => {
    const problem = fc
      .record({
        nodes: fc.integer({ min: 2, max: 3 }),
        gpusPerNode: fc.integer({ min: 1, max: 3 }),
        groups: fc.integer({ min: 1, max: 4 }),
        groupSize: fc.integer({ min: 2, max: 3 }),
        extraSlotsPerGpu: fc.integer({ min: 0, max: 2 }),
        layers: fc.constant(2),
        slack: fc.constantFrom(0, 0.05),
        seed: fc.integer({ min: 0, max: 1000 }),
      })
      .chain((t) => placementProblem(t, fc.integer({ min: 0, max: 40 })).map((p) => ({ ...p, t })));
    fc.assert(
      fc.property(problem, ({ load, o, t }) => {
        const trace = sampleRoutingTrace(load, { tokens: 50, topK: 2, groups: t.groups, seed: t.seed });
        const input = refinePlacement(load, rebalanceExperts(load, { ...o, groups: 1 }));
        const out = localizePlacement(input, trace, {
          nodes: o.nodes,
          maxLoadIncrease: t.slack,
          tries: 60,
          seed: t.seed,
        });
        expectMapsInvert(out, o.replicas, load[0]!.length);
        expect(out.replicaCounts).toEqual(input.replicaCounts);
        const check = placementTraffic(out, trace, { nodes: o.nodes });
        out.after.crossNodeBytes.forEach((bytes, l) => {
          expect(bytes).toBeLessThanOrEqual(out.before.crossNodeBytes[l]! + 1e-9);
          expect(check.crossNodeBytes[l]).toBeCloseTo(bytes, 9);
          const bound = Math.max(...out.before.gpuLoad[l]!) * (1 + t.slack);
          expect(Math.max(...out.after.gpuLoad[l]!)).toBeLessThanOrEqual(bound * (1 + 1e-9));
        });
      }),
      { numRuns: 60, seed: 31 },
    );
  });

  it('runs the TSDoc examples: the hierarchical placement reaches one node per token, localize helps the global one', () => {
    const trace = sampleRoutingTrace(LOAD8, { tokens: 4096, topK: 2, groups: 2, groupsPerToken: 1 });
    const hier = rebalanceExperts(LOAD8, { replicas: 12, groups: 2, nodes: 2, gpus: 4 });
    const glob = rebalanceExperts(LOAD8, { replicas: 12, groups: 1, nodes: 2, gpus: 4 });
    // half the tokens sit on the node of the group they chose
    expect(placementTraffic(hier, trace, { nodes: 2 }).remoteNodesPerToken[0]).toBeCloseTo(0.5, 1);
    const local = localizePlacement(glob, trace, { nodes: 2 });
    expect(local.after.crossNodeBytes[0]).toBeLessThan(local.before.crossNodeBytes[0]!);
    expect(local.after.balancedness[0]).toBeGreaterThanOrEqual(local.before.balancedness[0]! - 1e-9);
    expect(local.swaps[0]).toBeGreaterThan(0);
    expect(local.policy).toBe('global');
  });

  it('rejects a trace or topology that does not fit the placement', () => {
    const p = rebalanceExperts(LOAD8, { replicas: 12, groups: 1, nodes: 2, gpus: 4 });
    const trace = sampleRoutingTrace(LOAD8, { tokens: 8, topK: 2 });
    const expectError = (f: () => unknown, re: RegExp) => {
      try {
        f();
        expect.unreachable();
      } catch (e) {
        expect(isPlanError(e) && e.code === 'INVALID_ARGUMENT').toBe(true);
        expect((e as Error).message).toMatch(re);
      }
    };
    expectError(
      () => placementTraffic(p, { topK: 2, experts: [] }, { nodes: 2 }),
      /`trace.experts.length` .* must be 1 \(the placement's layers\), got 0/,
    );
    expectError(
      () => placementTraffic(p, { topK: 2, experts: [[0, 8]] }, { nodes: 2 }),
      /`trace.experts\[0\]\[1\]` .* in \[0, 7\], got 8/,
    );
    expectError(
      () => placementTraffic(p, { topK: 2, experts: [[0, 1, 2]] }, { nodes: 2 }),
      /multiple of topK \(2\), got 3/,
    );
    expectError(
      () => placementTraffic(p, trace, { nodes: 3 }),
      /`options.nodes` .* a divisor of placement.gpus \(4\), got 3/,
    );
    expectError(() => placementTraffic(p, trace, { nodes: 2, bytesPerToken: -1 }), /bytesPerToken/);
    expectError(() => localizePlacement(p, trace, { nodes: 2, maxLoadIncrease: -0.1 }), /maxLoadIncrease/);
  });
});
