/**
 * EPLB alone against EPLB + refinePlacement on the same loads: uniform and Zipf-skewed token counts
 * (seeded) and real per-layer expert loads from Switchyard training runs (experiments/*\/<arm>/
 * metrics.jsonl, the `expertLoad` shares averaged over the last 50 steps).
 * Run: `pnpm --filter @switchyard/plan bench:eplb` (prints the Markdown tables of
 * benchmarks/eplb-refine-202612.md). Balancedness = mean / max GPU load, averaged over layers;
 * "worst layer" is the lowest layer's. Deterministic: the same numbers on every machine.
 */
import { readFileSync } from 'node:fs';
import { balancedness, type RebalanceOptions, rebalanceExperts, refinePlacement } from '../src/index';

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

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
process.stdout.write(`${out.join('\n')}`);
