// Random expert-placement problems for the property tests of rebalanceExperts and refinePlacement:
// a topology (nodes, GPUs per node, expert groups, experts per group, spare slots per GPU) and
// per-layer loads drawn from `value`; and the structure every placement must keep.
import fc from 'fast-check';
import { expect } from 'vitest';
import type { ExpertPlacement, RebalanceOptions } from '../src/placement/eplb';

/** The sizes of one placement problem. */
export interface Topology {
  readonly nodes: number;
  readonly gpusPerNode: number;
  readonly groups: number;
  readonly groupSize: number;
  /** Slots per GPU beyond the fewest that hold every expert. */
  readonly extraSlotsPerGpu: number;
  /** Layers of the load (default 1 to 3 drawn). */
  readonly layers?: number;
}

/** Loads [layers][groups * groupSize] from `value`, and the options of a topology. */
export function placementProblem(
  t: Topology,
  value: fc.Arbitrary<number>,
): fc.Arbitrary<{ load: number[][]; o: RebalanceOptions }> {
  const experts = t.groups * t.groupSize;
  const gpus = t.nodes * t.gpusPerNode;
  const replicas = gpus * (Math.ceil(experts / gpus) + t.extraSlotsPerGpu);
  const row = fc.array(value, { minLength: experts, maxLength: experts });
  const load = fc.array(row, { minLength: t.layers ?? 1, maxLength: t.layers ?? 3 });
  return fc.record({ load, o: fc.constant({ replicas, groups: t.groups, nodes: t.nodes, gpus }) });
}

/**
 * The structure every placement keeps, whatever made it: per layer R slots holding experts, every
 * expert >= 1 replica with counts matching the slots, and logToPhys the inverse of physToLog (each
 * slot once, at its expert, -1 past the count). Throws (a failed expect) otherwise.
 */
export function expectMapsInvert(p: ExpertPlacement, replicas: number, experts: number): void {
  const maxReplicas = Math.max(...p.replicaCounts.flat());
  p.physToLog.forEach((slotsR, l) => {
    const countE = p.replicaCounts[l]!;
    expect(slotsR).toHaveLength(replicas);
    expect(countE).toHaveLength(experts);
    expect(countE.every((c) => Number.isInteger(c) && c >= 1)).toBe(true);
    const seen = new Array<number>(experts).fill(0);
    for (const e of slotsR) seen[e]! += 1;
    expect(seen).toEqual(countE);
    const slotSeen = new Array<number>(replicas).fill(0);
    p.logToPhys[l]!.forEach((slots, e) => {
      expect(slots).toHaveLength(maxReplicas);
      slots.forEach((slot, k) => {
        if (k < countE[e]!) {
          expect(slotsR[slot]).toBe(e);
          slotSeen[slot]! += 1;
        } else expect(slot).toBe(-1);
      });
    });
    expect(slotSeen.every((n) => n === 1)).toBe(true);
  });
}
