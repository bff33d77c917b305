// Random expert-placement problems for the property tests of rebalanceExperts and refinePlacement:
// a topology (nodes, GPUs per node, expert groups, experts per group, spare slots per GPU) and
// per-layer loads drawn from `value`.
import fc from 'fast-check';
import type { RebalanceOptions } from '../src/placement/eplb';

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
