/**
 * EPLB alone against EPLB + refinePlacement on the same loads: uniform and Zipf-skewed token counts
 * (seeded) and real per-layer expert loads from Switchyard training runs (experiments/*\/<arm>/
 * metrics.jsonl, the `expertLoad` shares averaged over the last 50 steps); then balance and
 * cross-node traffic together on routing traces sampled from those loads (hierarchical EPLB,
 * global EPLB, + refinePlacement, + localizePlacement).
 * Run: `pnpm --filter @switchyard/plan bench:eplb` (prints the Markdown tables of
 * benchmarks/eplb-refine-202612.md). Balancedness = mean / max GPU load, averaged over layers;
 * "worst layer" is the lowest layer's. Deterministic: the same numbers on every machine, except
 * the milliseconds.
 */
import { readFileSync } from 'node:fs';
import {
  balancedness,
  type ExpertPlacement,
  localizePlacement,
  placementTraffic,
  type RebalanceOptions,
  type RoutingTrace,
  rebalanceExperts,
  refinePlacement,
  sampleRoutingTrace,
  traceCounts,
} from '../src/index';
import { seededRandom as rng } from '../src/placement/random';

/**
 * [L][E] token counts: per layer, `tokens` draws from p(e) ∝ 1 / rank(e)^s with the ranks a random
 * permutation of the experts (s = 0: uniform).
 */
function sampledLoads(layers: number, experts: number, s: number, tokens: number, seed: number): number[][] {
  const random = rng(seed);
  return Array.from({ length: layers }, () => {
    const rankE = Array.from({ length: experts }, (_, e) => e);
    for (let i = experts - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [rankE[i], rankE[j]] = [rankE[j]!, rankE[i]!];
    }
    const weightE = rankE.map((r) => 1 / (r + 1) ** s);
    const total = weightE.reduce((a, b) => a + b, 0);
    const cdfE: number[] = [];
    let acc = 0;
    for (const w of weightE) {
      acc += w / total;
      cdfE.push(acc);
    }
    const countE = new Array<number>(experts).fill(0);
    for (let t = 0; t < tokens; t++) {
      const u = random();
      let e = cdfE.findIndex((c) => u < c);
      if (e < 0) e = experts - 1;
      countE[e]! += 1;
    }
    return countE;
  });
}

/** [L][E] mean of `expertLoad` over the last `steps` steps of a run's metrics.jsonl. */
function runLoads(arm: string, steps: number): number[][] {
  const url = new URL(`../../../experiments/${arm}/metrics.jsonl`, import.meta.url);
  const rows = readFileSync(url, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as { expertLoad?: number[][] })
    .filter((r) => r.expertLoad !== undefined)
    .slice(-steps)
    .map((r) => r.expertLoad!);
  const first = rows[0]!;
  return first.map((rowE, l) => rowE.map((_, e) => rows.reduce((a, r) => a + r[l]![e]!, 0) / rows.length));
}

interface Trace {
  readonly name: string;
  readonly load: number[][];
}

interface Shape {
  readonly name: string;
  readonly hierarchical: RebalanceOptions;
  readonly global: RebalanceOptions;
}

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

function row(trace: Trace, shape: Shape, policy: 'hierarchical' | 'global'): string {
  const o = shape[policy];
  const p = rebalanceExperts(trace.load, o);
  const t0 = performance.now();
  const r = refinePlacement(trace.load, p, { nodes: o.nodes });
  const ms = performance.now() - t0;
  const before = balancedness(trace.load, p).balancedness;
  const after = balancedness(trace.load, r).balancedness;
  const improved = after.filter((b, l) => b > before[l]! + 1e-9).length;
  const gain = mean(after) - mean(before);
  return [
    trace.name,
    `${o.replicas} / ${o.gpus} / ${o.groups} / ${o.nodes}`,
    p.policy,
    mean(before).toFixed(4),
    mean(after).toFixed(4),
    gain > 5e-5 ? `+${gain.toFixed(4)}` : 'none',
    `${Math.min(...before).toFixed(3)} -> ${Math.min(...after).toFixed(3)}`,
    `${improved} / ${before.length}`,
    `${r.swaps.reduce((a, b) => a + b, 0)} / ${r.moves.reduce((a, b) => a + b, 0)}`,
    ms.toFixed(1),
  ].join(' | ');
}

const HEADER = [
  '| trace | R / P / G / N | policy | EPLB | EPLB + refine | gain | worst layer | layers improved | swaps / moves | refine ms |',
  '|---|---|---|---:|---:|---:|---|---:|---:|---:|',
];

const small: Shape = {
  name: 'E = 8',
  hierarchical: { replicas: 12, gpus: 4, groups: 2, nodes: 2 },
  global: { replicas: 12, gpus: 4, groups: 1, nodes: 2 },
};
const large: Shape = {
  name: 'E = 64',
  hierarchical: { replicas: 80, gpus: 16, groups: 8, nodes: 2 },
  global: { replicas: 80, gpus: 16, groups: 1, nodes: 2 },
};

const synthetic = (experts: number): Trace[] => [
  { name: 'uniform', load: sampledLoads(16, experts, 0, 8192, 1) },
  { name: 'Zipf s = 1.0', load: sampledLoads(16, experts, 1.0, 8192, 2) },
  { name: 'Zipf s = 1.5', load: sampledLoads(16, experts, 1.5, 8192, 3) },
];
const real: Trace[] = ['loss-free/none', 'loss-free/loss-free', 'capacity/cf-1.0', 'capacity/dropless'].map(
  (arm) => ({ name: `run ${arm}`, load: runLoads(arm, 50) }),
);

/** One placement pipeline of the traffic table: what it runs on the loads and the trace. */
interface Variant {
  readonly name: string;
  readonly place: (load: number[][], trace: RoutingTrace) => { p: ExpertPlacement; swaps?: number[] };
}

function trafficVariants(shape: Shape, nodes: number, slack: number): Variant[] {
  const global = (load: number[][]) => refinePlacement(load, rebalanceExperts(load, shape.global));
  return [
    { name: 'EPLB hierarchical', place: (load) => ({ p: rebalanceExperts(load, shape.hierarchical) }) },
    { name: 'EPLB global', place: (load) => ({ p: rebalanceExperts(load, shape.global) }) },
    { name: 'EPLB global + refine', place: (load) => ({ p: global(load) }) },
    {
      name: 'EPLB global + refine + localize',
      place: (load, trace) => {
        const r = localizePlacement(global(load), trace, { nodes });
        return { p: r, swaps: r.swaps };
      },
    },
    {
      name: `EPLB global + refine + localize (max load +${slack * 100}%)`,
      place: (load, trace) => {
        const r = localizePlacement(global(load), trace, { nodes, maxLoadIncrease: slack });
        return { p: r, swaps: r.swaps };
      },
    },
  ];
}

/** Rows of the traffic table: every variant placed on the trace's own counts and measured on the trace. */
function trafficRows(trace: Trace, routing: RoutingTrace, shape: Shape, nodes: number): string[] {
  const load = traceCounts(routing, trace.load[0]!.length);
  return trafficVariants(shape, nodes, 0.05).map((v) => {
    const t0 = performance.now();
    const { p, swaps } = v.place(load, routing);
    const ms = performance.now() - t0;
    const t = placementTraffic(p, routing, { nodes });
    const eplbView = balancedness(load, p).balancedness;
    return `| ${[
      trace.name,
      v.name,
      mean(eplbView).toFixed(4),
      mean(t.balancedness).toFixed(4),
      Math.min(...t.balancedness).toFixed(3),
      mean(t.remoteNodesPerToken).toFixed(3),
      mean(t.localShare).toFixed(3),
      swaps === undefined ? '' : String(swaps.reduce((a, b) => a + b, 0)),
      ms.toFixed(0),
    ].join(' | ')} |`;
  });
}

const TRAFFIC_HEADER = [
  '| trace | placement | balancedness (EPLB formula) | balancedness (routed) | worst layer (routed) | remote nodes / token | local share | swaps | ms |',
  '|---|---|---:|---:|---:|---:|---:|---:|---:|',
];

const out: string[] = [`node ${process.version}`, ''];
for (const [title, shape, traces] of [
  ['E = 8 experts (3 layers for runs, 16 for synthetic traces)', small, [...synthetic(8), ...real]],
  ['E = 64 experts, 16 layers', large, synthetic(64)],
] as const) {
  out.push(`### ${title}`, '', ...HEADER);
  for (const trace of traces) {
    for (const policy of ['hierarchical', 'global'] as const) out.push(`| ${row(trace, shape, policy)} |`);
  }
  out.push('');
}
// Traffic: E = 64 on 4 nodes x 4 GPUs (8 groups, 2 per node in the hierarchical policy), tokens
// choosing top-4 experts from 2 groups (node-limited to 2 nodes when groups live on nodes).
const trafficShape: Shape = {
  name: 'E = 64, 4 nodes',
  hierarchical: { replicas: 80, gpus: 16, groups: 8, nodes: 4 },
  global: { replicas: 80, gpus: 16, groups: 1, nodes: 4 },
};
out.push(
  '### Cross-node traffic: E = 64, 80 slots on 4 nodes x 4 GPUs, top-4 of 2 groups (8 groups), 4096 tokens per layer, 16 layers',
  '',
  ...TRAFFIC_HEADER,
);
for (const trace of synthetic(64)) {
  const routing = sampleRoutingTrace(trace.load, {
    tokens: 4096,
    topK: 4,
    groups: 8,
    groupsPerToken: 2,
    seed: 11,
  });
  out.push(...trafficRows(trace, routing, trafficShape, 4));
}
out.push(
  '',
  '### Cross-node traffic: real runs, E = 8, 12 slots on 2 nodes x 2 GPUs (hierarchical: 2 groups), top-2 of all experts, 4096 tokens per layer, 3 layers',
  '',
  ...TRAFFIC_HEADER,
);
for (const trace of real) {
  const routing = sampleRoutingTrace(trace.load, { tokens: 4096, topK: 2, seed: 11 });
  out.push(...trafficRows(trace, routing, small, 2));
}
out.push('');
process.stdout.write(`${out.join('\n')}`);
