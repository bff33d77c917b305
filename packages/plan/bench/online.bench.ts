/**
 * Online rebalancing on a simulated trace of drifting expert loads: a placement made once (static),
 * EPLB re-run every window (always), and OnlineRebalancer's time rule (threshold), each scored on
 * the window after its decision (the placement runs on loads it has not seen).
 * Run: `pnpm --filter @switchyard/plan bench:online` prints the tables of
 * benchmarks/online-rebalance-202612.md; `... bench:online -- --svg DIR` also writes the figures of
 * the guide (docs/public/placement). Deterministic (seeded).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  balancedness,
  decideRebalance,
  type ExpertPlacement,
  type OnlineRebalanceOptions,
  OnlineRebalancer,
  rebalanceExperts,
} from '../src/index';
import { seededRandom, shuffled } from '../src/placement/random';
import { lineChartSvg } from './svg';

const LAYERS = 16;
const E = 64;
const WINDOWS = 120;
const STEPS_PER_WINDOW = 50;
/** Assignments per layer per window: 50 steps of 4096 tokens, top-4. */
const ASSIGNMENTS = STEPS_PER_WINDOW * 4096 * 4;
/** Per window, each expert's log-popularity takes a N(0, DRIFT) step. */
const DRIFT = 0.15;

const options: OnlineRebalanceOptions = {
  replicas: 80,
  groups: 8,
  nodes: 4,
  gpus: 16,
  // A DeepSeek-V3-sized expert in training: 44M parameters x (2 B weights + 4 B FP32 master + 8 B Adam).
  expertBytes: 3 * 7168 * 2048 * 14,
  // 16 GPUs moving at 25 GB/s each.
  moveBandwidth: 16 * 25e9,
  expertSecondsPerStep: 0.5,
  horizonSteps: STEPS_PER_WINDOW,
};

/** Windows of [layer][expert] counts: log-popularity starts at Zipf(1.0) and random-walks. */
function trace(): number[][][] {
  const random = seededRandom(77);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const thetaLE = Array.from({ length: LAYERS }, () => shuffled(E, random).map((r) => -Math.log(r + 1)));
  return Array.from({ length: WINDOWS }, () => {
    const window = thetaLE.map((thetaE) => {
      const w = thetaE.map((t) => Math.exp(t));
      const total = w.reduce((a, b) => a + b, 0);
      // Multinomial counts, normal approximation (the counts are large).
      return w.map((x) => {
        const p = x / total;
        const mean = ASSIGNMENTS * p;
        return Math.max(0, Math.round(mean + Math.sqrt(mean * (1 - p)) * gauss()));
      });
    });
    for (const thetaE of thetaLE) for (let e = 0; e < E; e++) thetaE[e]! += DRIFT * gauss();
    return window;
  });
}

interface Run {
  readonly name: string;
  /** [window] mean balancedness on that window of the placement in force during it. */
  readonly balance: number[];
  /** [window] bytes moved by the decision made on it (for the next window). */
  readonly bytes: number[];
}

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const windows = trace();

/** Window 0 places with EPLB; from then, `decide` maps the last window's counts to the next placement. */
function run(
  name: string,
  decide: (counts: number[][], current: ExpertPlacement) => { p: ExpertPlacement; bytes: number },
): Run {
  let current = rebalanceExperts(windows[0]!, options);
  const balance: number[] = [];
  const bytes: number[] = [];
  for (let t = 1; t < WINDOWS; t++) {
    balance.push(mean(balancedness(windows[t]!, current).balancedness));
    const d = decide(windows[t]!, current);
    bytes.push(d.bytes);
    current = d.p;
  }
  return { name, balance, bytes };
}

/** The four policies under one cost regime; `replaced` counts the threshold policies' re-placements. */
function policies(o: OnlineRebalanceOptions): { runs: Run[]; replaced: number[] } {
  const replaced = [0, 0];
  const threshold = (name: string, smoothing: number, i: number): Run => {
    const rebalancer = new OnlineRebalancer({ ...o, smoothing }, rebalanceExperts(windows[0]!, o));
    rebalancer.observe(windows[0]!);
    return run(name, (counts) => {
      const d = rebalancer.observe(counts);
      if (d.replace) replaced[i]! += 1;
      return { p: d.placement, bytes: d.replace ? d.bytesMoved : 0 };
    });
  };
  const runs = [
    run('static (EPLB once)', (_, current) => ({ p: current, bytes: 0 })),
    run('always (EPLB every window)', (counts, current) => {
      const d = decideRebalance(current, counts, o);
      return { p: d.candidate, bytes: d.bytesMoved };
    }),
    threshold('threshold (OnlineRebalancer)', 1, 0),
    threshold('threshold, smoothing 0.5', 0.5, 1),
  ];
  return { runs, replaced };
}

const seconds = (r: Run, o: OnlineRebalanceOptions) => {
  // Expert time over the windows (grows as 1 / balancedness) plus the moves.
  const expert = r.balance.reduce((a, b) => a + (STEPS_PER_WINDOW * o.expertSecondsPerStep) / b, 0);
  const moves = r.bytes.reduce((a, b) => a + b, 0) / o.moveBandwidth;
  return { expert, moves };
};

const out: string[] = [
  `node ${process.version}; ${WINDOWS} windows of ${STEPS_PER_WINDOW} steps, ${LAYERS} layers x ${E} experts, ` +
    `${options.replicas} slots on ${options.gpus} GPUs / ${options.nodes} nodes, ${options.groups} groups`,
  '',
];
const regimes = [
  { name: 'moves cheap against expert time: 0.5 s of expert compute per step', o: options },
  {
    name: 'moves dear against expert time: 0.05 s of expert compute per step',
    o: { ...options, expertSecondsPerStep: 0.05 },
  },
];
let shown: Run[] = [];
for (const regime of regimes) {
  const { runs, replaced } = policies(regime.o);
  shown = runs;
  out.push(
    `### ${regime.name}`,
    '',
    `Threshold policy re-placed ${replaced[0]} times (${replaced[1]} with smoothing 0.5) in ${WINDOWS - 1} decisions.`,
    '',
    '| policy | mean balancedness | worst window | GB moved | move s | expert s | expert + move s |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...runs.map((r) => {
      const s = seconds(r, regime.o);
      return `| ${[
        r.name,
        mean(r.balance).toFixed(4),
        Math.min(...r.balance).toFixed(4),
        (r.bytes.reduce((a, b) => a + b, 0) / 1e9).toFixed(1),
        s.moves.toFixed(1),
        s.expert.toFixed(1),
        (s.expert + s.moves).toFixed(1),
      ].join(' | ')} |`;
    }),
    '',
  );
}
const runs = shown;
out.push(
  '### Every 10th window, dear moves: balancedness on the window (GB moved by the decision that follows it)',
  '',
  `| window | ${runs.map((r) => r.name).join(' | ')} |`,
  `|---:|${runs.map(() => '---:').join('|')}|`,
);
for (let t = 0; t < WINDOWS - 1; t += 10) {
  out.push(
    `| ${t + 1} | ${runs.map((r) => `${r.balance[t]!.toFixed(3)} (${(r.bytes[t]! / 1e9).toFixed(1)})`).join(' | ')} |`,
  );
}
out.push('');

const svgAt = process.argv.indexOf('--svg');
if (svgAt >= 0) {
  const dir = process.argv[svgAt + 1];
  if (dir === undefined) throw new Error('--svg needs a folder');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'online-balancedness.svg'),
    lineChartSvg({
      title: 'Balancedness on the next window, drifting loads (dear moves)',
      xLabel: 'window (50 steps each)',
      yLabel: 'mean balancedness',
      series: runs.map((r) => ({
        name: r.name.replace(/ \(.*/, ''),
        points: r.balance.map((b, t) => [t + 1, b] as const),
      })),
    }),
  );
  writeFileSync(
    join(dir, 'online-bytes.svg'),
    lineChartSvg({
      title: 'Expert bytes moved, cumulative (dear moves)',
      xLabel: 'window (50 steps each)',
      yLabel: 'GB',
      series: runs.map((r) => {
        let sum = 0;
        return {
          name: r.name.replace(/ \(.*/, ''),
          points: r.bytes.map((b, t) => {
            sum += b;
            return [t + 1, sum / 1e9] as const;
          }),
        };
      }),
    }),
  );
}
process.stdout.write(out.join('\n'));
