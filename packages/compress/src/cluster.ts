/**
 * Expert clustering: E experts into G groups by a similarity matrix (average-linkage agglomerative
 * clustering, or equal-size groups grown greedily and refined by swaps), and the Jaccard stability
 * of two groupings.
 *
 * Shape letters: E experts, G groups, M = E / G experts per group (equal-size groups).
 */
import { checkInt, invalidArgument, SwitchyardError } from '@switchyard/tensor';
import { checkSimilarity, type SimilarityMatrix } from './similarity';

/** A partition of E experts into G groups. */
export interface ExpertGrouping {
  readonly numExperts: number;
  readonly numGroups: number;
  /** Group of each expert [E]. */
  readonly groupOf: readonly number[];
  /** Experts of each group, ascending; groups ordered by their first expert. */
  readonly groups: readonly (readonly number[])[];
}

/** Options of {@link clusterExperts}. */
export interface ClusterOptions {
  /** Number of groups G, in [1, E]. */
  readonly numGroups: number;
  /** Make every group hold E / G experts (G must divide E). Default false. */
  readonly equalSize?: boolean;
}

/**
 * Builds a grouping from a group index per expert: groups are renumbered in order of their first
 * expert, so equal partitions compare equal. Throws on an empty group or an index out of range.
 *
 * When to use: to restore a saved grouping, or to compare one written by hand.
 *
 * @example
 * ```ts
 * groupingFromAssignment([1, 1, 0, 0]).groups; // [[0, 1], [2, 3]]
 * ```
 */
export function groupingFromAssignment(groupOf: readonly number[]): ExpertGrouping {
  const fn = 'groupingFromAssignment';
  if (!Array.isArray(groupOf) || groupOf.length === 0)
    throw invalidArgument(fn, 'groupOf', 'a non-empty array of group indices', groupOf);
  const E = groupOf.length;
  const renamed = new Map<number, number>();
  const out = groupOf.map((g, e) => {
    if (!Number.isInteger(g) || g < 0 || g >= E)
      throw invalidArgument(fn, `groupOf[${e}]`, `an integer in [0, ${E - 1}]`, g);
    if (!renamed.has(g)) renamed.set(g, renamed.size);
    return renamed.get(g)!;
  });
  const G = renamed.size;
  if ([...renamed.keys()].some((g) => g >= G))
    throw invalidArgument(fn, 'groupOf', `group indices 0 .. G-1 with no empty group (G = ${G})`, groupOf);
  const groups: number[][] = Array.from({ length: G }, () => []);
  out.forEach((g, e) => {
    groups[g]!.push(e);
  });
  return { numExperts: E, numGroups: G, groupOf: out, groups };
}

function checkGroups(fn: string, E: number, options: ClusterOptions): { G: number; equal: boolean } {
  if (options === null || typeof options !== 'object')
    throw invalidArgument(fn, 'options', 'a ClusterOptions object ({ numGroups })', options);
  const G = options.numGroups;
  if (!Number.isInteger(G) || G < 1) throw invalidArgument(fn, 'options.numGroups', 'an integer >= 1', G);
  if (G > E)
    throw invalidArgument(
      fn,
      'options.numGroups',
      `<= the number of experts E (${E}): G > E leaves a group empty`,
      G,
    );
  const equal = options.equalSize ?? false;
  if (typeof equal !== 'boolean') throw invalidArgument(fn, 'options.equalSize', 'a boolean', equal);
  if (equal && E % G !== 0)
    throw invalidArgument(fn, 'options.numGroups', `a divisor of E (${E}) for equal-size groups`, G);
  return { G, equal };
}

/**
 * Sum over groups of the similarity of every pair inside the group: the objective equal-size
 * clustering maximises.
 *
 * @example
 * ```ts
 * withinGroupSimilarity(s, groupingFromAssignment([0, 0, 1, 1])); // s[0][1] + s[2][3]
 * ```
 */
export function withinGroupSimilarity(s: SimilarityMatrix, grouping: ExpertGrouping): number {
  let total = 0;
  for (const g of grouping.groups)
    for (let a = 0; a < g.length; a++) for (let b = a + 1; b < g.length; b++) total += s[g[a]!]![g[b]!]!;
  return total;
}

/** Symmetrised copy (experts are compared both ways, so `(s[i][j] + s[j][i]) / 2`). */
function symmetric(s: SimilarityMatrix): number[][] {
  return s.map((row, i) => row.map((v, j) => (v + s[j]![i]!) / 2));
}

/** Average linkage: merge the two clusters with the highest mean pairwise similarity until G remain. */
function averageLinkage(s: number[][], G: number): number[] {
  const E = s.length;
  let clusters: number[][] = Array.from({ length: E }, (_, e) => [e]);
  while (clusters.length > G) {
    let best = Number.NEGATIVE_INFINITY;
    let pair: [number, number] = [0, 1];
    for (let a = 0; a < clusters.length; a++) {
      for (let b = a + 1; b < clusters.length; b++) {
        let sum = 0;
        for (const i of clusters[a]!) for (const j of clusters[b]!) sum += s[i]![j]!;
        const avg = sum / (clusters[a]!.length * clusters[b]!.length);
        if (avg > best) {
          best = avg;
          pair = [a, b];
        }
      }
    }
    const [a, b] = pair;
    const merged = [...clusters[a]!, ...clusters[b]!].sort((x, y) => x - y);
    clusters = clusters.filter((_, i) => i !== a && i !== b);
    clusters.push(merged);
  }
  const groupOf = new Array<number>(E).fill(0);
  clusters.forEach((c, g) => {
    for (const e of c) groupOf[e] = g;
  });
  return groupOf;
}

/**
 * Equal-size groups: each group starts from the most similar unassigned pair and grows by the
 * unassigned expert closest on average to its members; then swaps of two experts between groups are
 * applied, best first, while one raises the within-group similarity.
 */
function equalSizeGroups(s: number[][], G: number): number[] {
  const E = s.length;
  const M = E / G;
  const groupOf = new Array<number>(E).fill(-1);
  for (let g = 0; g < G; g++) {
    const free = groupOf.flatMap((v, e) => (v < 0 ? [e] : []));
    const members: number[] = [];
    if (M === 1 || free.length === 1) members.push(free[0]!);
    else {
      let best = Number.NEGATIVE_INFINITY;
      let pair: [number, number] = [free[0]!, free[1]!];
      for (let a = 0; a < free.length; a++)
        for (let b = a + 1; b < free.length; b++)
          if (s[free[a]!]![free[b]!]! > best) {
            best = s[free[a]!]![free[b]!]!;
            pair = [free[a]!, free[b]!];
          }
      members.push(...pair);
    }
    for (const e of members) groupOf[e] = g;
    while (members.length < M) {
      let best = Number.NEGATIVE_INFINITY;
      let pick = -1;
      for (let e = 0; e < E; e++) {
        if (groupOf[e]! >= 0) continue;
        let sum = 0;
        for (const m of members) sum += s[e]![m]!;
        if (sum > best) {
          best = sum;
          pick = e;
        }
      }
      members.push(pick);
      groupOf[pick] = g;
    }
  }
  // Swap refinement: the gain of swapping a (in ga) and b (in gb) is the change of the summed
  // similarity of each to its group's other members.
  const affinity = (e: number, g: number, skip: number): number => {
    let sum = 0;
    for (let j = 0; j < E; j++) if (j !== e && j !== skip && groupOf[j] === g) sum += s[e]![j]!;
    return sum;
  };
  for (let iter = 0; iter < E * E; iter++) {
    let bestGain = 1e-12;
    let swap: [number, number] | undefined;
    for (let a = 0; a < E; a++) {
      for (let b = a + 1; b < E; b++) {
        const [ga, gb] = [groupOf[a]!, groupOf[b]!];
        if (ga === gb) continue;
        const gain = affinity(a, gb, b) + affinity(b, ga, a) - affinity(a, ga, a) - affinity(b, gb, b);
        if (gain > bestGain) {
          bestGain = gain;
          swap = [a, b];
        }
      }
    }
    if (!swap) break;
    const [a, b] = swap;
    [groupOf[a], groupOf[b]] = [groupOf[b]!, groupOf[a]!];
  }
  return groupOf;
}

/**
 * Clusters E experts into G groups by a similarity matrix (higher = more alike). Free-size groups
 * come from average-linkage agglomerative clustering; equal-size groups (`equalSize`) are grown
 * greedily from the most similar pairs and refined by pairwise swaps. Deterministic: ties go to the
 * lower expert index.
 *
 * When to use: to decide which experts share a basis before compressing a layer, or periodically
 * during training to watch how stable the groups are ({@link groupingJaccard}).
 *
 * @example
 * ```ts
 * const grouping = clusterExperts(fusedSimilarity(sStruct, sFunc, 0.5), { numGroups: 2, equalSize: true });
 * grouping.groups; // e.g. [[0, 3, 5, 6], [1, 2, 4, 7]]
 * ```
 */
export function clusterExperts(similarity: SimilarityMatrix, options: ClusterOptions): ExpertGrouping {
  const fn = 'clusterExperts';
  const E = checkSimilarity(fn, 'similarity', similarity);
  const { G, equal } = checkGroups(fn, E, options);
  const s = symmetric(similarity);
  return groupingFromAssignment(equal ? equalSizeGroups(s, G) : averageLinkage(s, G));
}

/**
 * Jaccard stability of two groupings of the same experts, counted over pairs: the pairs of experts
 * that share a group in both, divided by the pairs that share a group in either (1 when neither has
 * such a pair). It does not depend on how groups are numbered; 1 means the same partition.
 *
 * When to use: between successive clusterings during training, to see whether groups settle.
 *
 * @example
 * ```ts
 * groupingJaccard(groupingFromAssignment([0, 0, 1, 1]), groupingFromAssignment([0, 0, 0, 1])); // 1 / 4
 * ```
 */
export function groupingJaccard(a: ExpertGrouping, b: ExpertGrouping): number {
  const fn = 'groupingJaccard';
  for (const [arg, g] of [
    ['a', a],
    ['b', b],
  ] as const) {
    if (g === null || typeof g !== 'object' || !Array.isArray(g.groupOf))
      throw invalidArgument(fn, arg, 'an ExpertGrouping', g);
  }
  if (a.groupOf.length !== b.groupOf.length)
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`b\` passed to ${fn}() must group the same ${a.groupOf.length} experts as \`a\`, got ${b.groupOf.length}`,
    );
  const E = a.groupOf.length;
  let both = 0;
  let either = 0;
  for (let i = 0; i < E; i++) {
    for (let j = i + 1; j < E; j++) {
      const inA = a.groupOf[i] === a.groupOf[j];
      const inB = b.groupOf[i] === b.groupOf[j];
      if (inA && inB) both++;
      if (inA || inB) either++;
    }
  }
  return either === 0 ? 1 : both / either;
}

/** Checks that `grouping` partitions `numExperts` experts; returns it. */
export function checkGrouping(
  fn: string,
  arg: string,
  grouping: unknown,
  numExperts: number,
): ExpertGrouping {
  checkInt(fn, 'numExperts', numExperts, { min: 1 });
  const g = grouping as ExpertGrouping;
  if (g === null || typeof g !== 'object' || !Array.isArray(g.groupOf) || !Array.isArray(g.groups))
    throw invalidArgument(
      fn,
      arg,
      'an ExpertGrouping (from clusterExperts or groupingFromAssignment)',
      grouping,
    );
  if (g.groupOf.length !== numExperts)
    throw invalidArgument(
      fn,
      `${arg}.groupOf`,
      `one group index per expert (${numExperts})`,
      g.groupOf.length,
    );
  return groupingFromAssignment(g.groupOf);
}
