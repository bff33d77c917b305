// 50-step loss curves of `switchyard-train` under every pipeline schedule beside the one-rank curve
// (same seed, same global batch, AdamW, clipping, balance loss): the largest relative difference of
// each step's loss, balance loss and gradient norm.
//   pnpm --filter switchyard-train bench:pipeline-curves       (wasm; about 4 minutes on 2 free cores)
// BENCH_CURVE_STEPS (default 50), BENCH_CURVE_RANKS (default 2: one 2-rank pipeline; 4: two replicas).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../src/main';

const steps = Number(process.env.BENCH_CURVE_STEPS ?? 50);
const ranks = process.env.BENCH_CURVE_RANKS ?? '2';
const root = mkdtempSync(join(tmpdir(), 'sy-curves-'));
const RUN = [
  '--preset',
  'tiny',
  '--backend',
  'wasm',
  ...[
    'data.genres=[news, humor]',
    'data.maxTextsPerDomain=4',
    'model.numLayers=4',
    `train.steps=${steps}`,
    'train.gradAccum=4',
    'train.seqLen=16',
    'train.microBatchSize=2',
    'eval.every=0',
    'eval.tokensPerDomain=64',
    'log.plots=false',
    'log.progress=quiet',
    'balance.method=micro',
  ].flatMap((s) => ['--set', s]),
];
const quiet = { write: () => true, isTTY: false };

async function run(name: string, extra: string[]): Promise<Record<string, number>[]> {
  const out = join(root, name);
  const code = await main([...RUN, '--out', out, ...extra], { stdout: quiet, stderr: quiet });
  if (code !== 0) throw new Error(`${name}: switchyard-train exited with ${code}`);
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
}

const t0 = Date.now();
try {
  const one = await run('one', []);
  console.log(
    `one rank: loss ${one[0]!.loss!.toFixed(4)} at step 1, ${one.at(-1)!.loss!.toFixed(4)} at step ${steps}`,
  );
  console.log(`\n| schedule | --ranks | max rel. diff, loss | balance loss | grad norm | final loss |`);
  console.log('|---|---|---|---|---|---|');
  for (const schedule of ['gpipe', '1f1b', 'interleaved', 'zb', 'dualpipe', 'dualpipev']) {
    const got = await run(schedule, ['--ranks', ranks, '--pipeline', '2', '--schedule', schedule]);
    const worst = (key: string) =>
      Math.max(...got.map((r, i) => Math.abs(r[key]! - one[i]![key]!) / Math.abs(one[i]![key]!)));
    console.log(
      `| ${schedule} | ${ranks} | ${worst('loss').toExponential(1)} | ${worst('auxLoss').toExponential(1)} | ` +
        `${worst('gradNorm').toExponential(1)} | ${got.at(-1)!.loss!.toFixed(4)} |`,
    );
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
console.log(`\nwall time: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
