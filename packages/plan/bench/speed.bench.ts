/**
 * Planning speed against the targets: EPLB for 61 layers x 256 experts onto 288 slots over 36 GPUs
 * in under 100 ms, and a HybridEP plan for 1000 datacenters in under 5 s (DeepSeek-V3's 58 MoE
 * layers, 256 experts; every datacenter routing alike, and each routing its own way).
 * Run: `pnpm --filter @switchyard/plan bench:speed`. Prints the median of several runs after a
 * warm-up, beside the target: CPU time of this process (user + system: what the planner costs,
 * robust on a shared machine; it is single-threaded, so on an idle machine wall time is about the
 * same) and wall time. The targets live here, not in tests; they are judged on CPU time.
 */
import { DEEPSEEK_V3, HARDWARE_PRESETS, planHybridEp, rebalanceExperts } from '../src/index';
import { seededRandom, shuffled } from '../src/placement/random';

/** Median CPU and wall milliseconds of `runs` calls after one warm-up call. */
function time(runs: number, f: () => unknown): { cpu: number; wall: number } {
  f();
  const samples = Array.from({ length: runs }, () => {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    f();
    const wall = performance.now() - t0;
    const c = process.cpuUsage(c0);
    return { cpu: (c.user + c.system) / 1000, wall };
  });
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(runs / 2)]!;
  return { cpu: median(samples.map((x) => x.cpu)), wall: median(samples.map((x) => x.wall)) };
}

const random = seededRandom(61);
/** [L][E] Zipf(1.0) loads, a random expert ranking per layer, as token counts. */
const zipf = (layers: number, experts: number) =>
  Array.from({ length: layers }, () => shuffled(experts, random).map((r) => Math.round(1e6 / (r + 1))));

const lines: string[] = [
  `node ${process.version}`,
  '',
  '| what | CPU (median) | wall (median) | target | |',
  '|---|---:|---:|---:|---|',
];
const row = (what: string, ms: { cpu: number; wall: number }, target: number) =>
  lines.push(
    `| ${what} | ${ms.cpu.toFixed(1)} ms | ${ms.wall.toFixed(1)} ms | < ${target} ms | ${ms.cpu < target ? 'met' : 'MISSED'} |`,
  );

const eplbLoad = zipf(61, 256);
row(
  'EPLB hierarchical, 61 x 256 experts, 288 slots, 36 GPUs, 4 nodes, 8 groups',
  time(9, () => rebalanceExperts(eplbLoad, { replicas: 288, gpus: 36, nodes: 4, groups: 8 })),
  100,
);
row(
  'EPLB global, 61 x 256 experts, 288 slots, 36 GPUs',
  time(9, () => rebalanceExperts(eplbLoad, { replicas: 288, gpus: 36, nodes: 4, groups: 1 })),
  100,
);

const moeLayers = DEEPSEEK_V3.layers - DEEPSEEK_V3.denseLayers;
const load = zipf(moeLayers, 256);
const options = {
  model: DEEPSEEK_V3,
  hardware: HARDWARE_PRESETS.h800,
  datacenters: 1000,
  wan: { alpha: 5e-3, beta: 10e9 / 8 },
  tokensPerDatacenter: (4096 * 256) / 8,
};
row(
  `HybridEP plan, 1000 DCs (4 domains of 250), ${moeLayers} MoE layers x 256 experts, every DC routing alike`,
  time(3, () => planHybridEp(load, options)),
  5000,
);
// Each DC its own ranking of the experts: the 4 domains plan separately.
const rankings = Array.from({ length: 1000 }, () => shuffled(256, random));
const datacenterLoad = load.map((_, l) => rankings.map((rank) => rank.map((r) => 1 / (((r + l) % 256) + 1))));
row(
  `HybridEP plan, 1000 DCs, ${moeLayers} MoE layers x 256 experts, each DC routing its own way`,
  time(1, () => planHybridEp(load, { ...options, datacenterLoad })),
  5000,
);
process.stdout.write(`${lines.join('\n')}\n`);
