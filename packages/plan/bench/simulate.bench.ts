/**
 * Speed of the cluster simulator: one DeepSeek-V3-shaped step (PP 16, EP 64, DualPipe, FP8) while
 * the GPU count (DP replicas) and the micro-batch count grow. Run: `pnpm --filter @switchyard/plan bench`.
 * Prints milliseconds per simulated step (median of 5 runs after one warm-up).
 */
import { DEEPSEEK_V3, parseCluster, type SimulateOptions, simulateCluster } from '../src/index';

function timeIt(options: SimulateOptions): { ms: number; stepTime: number } {
  let stepTime = simulateCluster(options).stepTime; // warm-up
  const runs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    stepTime = simulateCluster(options).stepTime;
    runs.push(performance.now() - t0);
  }
  runs.sort((a, b) => a - b);
  return { ms: runs[2]!, stepTime };
}

const base = (gpus: number, microBatches: number): SimulateOptions => {
  const dp = gpus / (16 * 64);
  return {
    model: DEEPSEEK_V3,
    cluster: parseCluster(`h800x${gpus}`),
    pp: 16,
    ep: 64,
    dp,
    microBatches,
    schedule: 'dualpipe',
    globalBatch: microBatches * 64 * dp,
    precision: 'fp8',
  };
};

const out: string[] = [];
out.push(
  `node ${process.version}`,
  '',
  '| GPUs | micro-batches | simulate (ms) | simulated step (s) |',
  '|---:|---:|---:|---:|',
);
for (const gpus of [1024, 2048, 4096, 8192, 16384]) {
  const r = timeIt(base(gpus, 120));
  out.push(`| ${gpus} | 120 | ${r.ms.toFixed(1)} | ${r.stepTime.toFixed(3)} |`);
}
for (const n of [32, 64, 120, 240, 480, 960]) {
  const r = timeIt(base(2048, n));
  out.push(`| 2048 | ${n} | ${r.ms.toFixed(1)} | ${r.stepTime.toFixed(3)} |`);
}
process.stdout.write(`${out.join('\n')}\n`);
