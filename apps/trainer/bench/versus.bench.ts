// The default job's training speed against another build of Switchyard, measured in one run: the
// `small` preset on the built-in corpus through each checkout's own `switchyard-train` CLI (its dist
// build), one rank, wasm, alternating between the two builds round after round so that load from
// other processes falls on both alike. Prints each round's tokens/s (median of the steps after the
// warm-up), the ratio per round and its median and spread, and the step losses of both builds.
//   BASE_CHECKOUT=/path/to/other/checkout pnpm --filter switchyard-train bench:versus
// The other checkout is any commit, built: e.g.
//   git worktree add /tmp/base <commit> && cd /tmp/base && npx pnpm install && npx pnpm exec turbo run build --filter switchyard-train...
// Options (env): VERSUS_STEPS (20), VERSUS_WARMUP (4), VERSUS_ROUNDS (3).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median } from '../src/report/report';

const base = process.env.BASE_CHECKOUT;
if (!base) {
  console.error('bench:versus: set BASE_CHECKOUT to a built checkout of the commit to compare against');
  process.exit(2);
}
const here = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
const steps = Number(process.env.VERSUS_STEPS ?? 20);
const warmup = Number(process.env.VERSUS_WARMUP ?? 4);
const rounds = Number(process.env.VERSUS_ROUNDS ?? 3);
const cliOf = (root: string) => join(root, 'apps/trainer/dist/cli.js');
for (const root of [base, here]) {
  if (!existsSync(cliOf(root))) {
    console.error(`bench:versus: ${cliOf(root)} is missing; build that checkout first`);
    process.exit(2);
  }
}
const commitOf = (root: string) =>
  execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();

interface Run {
  readonly tokensPerSec: number;
  readonly losses: number[];
}

function trainOnce(root: string): Run {
  const out = mkdtempSync(join(tmpdir(), 'switchyard-versus-'));
  try {
    execFileSync(
      process.execPath,
      [
        cliOf(root),
        '--preset',
        'small',
        '--backend',
        'wasm',
        '--set',
        `train.steps=${steps}`,
        '--set',
        'eval.every=0',
        '--set',
        'eval.tokensPerDomain=128',
        '--set',
        'log.plots=false',
        '--set',
        'log.progress=quiet',
        '--out',
        join(out, 'run'),
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    const records = readFileSync(join(out, 'run/metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { step: number; loss: number; tokensPerSec: number });
    return {
      tokensPerSec: median(records.slice(warmup).map((r) => r.tokensPerSec)),
      losses: records.map((r) => r.loss),
    };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

const label = { base: `base ${commitOf(base)}`, here: `this ${commitOf(here)}` };
console.log(
  `small preset, one rank, wasm, ${steps} steps (median tokens/s of steps ${warmup + 1}..${steps}), ${rounds} rounds`,
);
const ratios: number[] = [];
let last: { base: Run; here: Run } | undefined;
for (let r = 1; r <= rounds; r++) {
  const b = trainOnce(base);
  const h = trainOnce(here);
  ratios.push(h.tokensPerSec / b.tokensPerSec);
  last = { base: b, here: h };
  console.log(
    `round ${r}: ${label.base} ${b.tokensPerSec.toFixed(0)} tokens/s, ${label.here} ${h.tokensPerSec.toFixed(0)} tokens/s, ratio ${ratios.at(-1)!.toFixed(2)}`,
  );
}
const sorted = [...ratios].sort((a, b) => a - b);
console.log(
  `ratio this/base: median ${median(ratios).toFixed(2)} (rounds ${sorted.map((x) => x.toFixed(2)).join(', ')})`,
);
if (last) {
  const worst = Math.max(...last.here.losses.map((l, i) => Math.abs(l - last!.base.losses[i]!)));
  console.log(
    `step losses: step 1 ${last.base.losses[0]!.toFixed(6)} / ${last.here.losses[0]!.toFixed(6)}, step ${steps} ${last.base.losses.at(-1)!.toFixed(6)} / ${last.here.losses.at(-1)!.toFixed(6)} (base / this); largest difference over ${steps} steps ${worst.toExponential(2)}`,
  );
}
