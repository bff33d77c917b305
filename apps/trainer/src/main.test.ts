/**
 * End-to-end tests of the `switchyard-train` command (in-process): a short training run on a Brown
 * subset, exact resumption, the eval command, bad input, and the non-finite guard. Training runs
 * only on wasm (the pure-JS cpu backend is too slow for them).
 */
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCheckpoint } from '@switchyard/model';
import { logSoftmax, tf } from '@switchyard/tensor';
import { beforeAll, describe, expect, it } from 'vitest';
import { runCli as cli } from '../test/cli';

const onCpu = process.env.SWITCHYARD_BACKEND === 'cpu';
const root = mkdtempSync(join(tmpdir(), 'sy-cli-'));

/** Settings that keep a run to a few seconds: three genres, five texts each, the tiny model. */
const SMALL_DATA = [
  'data.genres=[news, humor, science_fiction]',
  'data.maxTextsPerDomain=5',
  'log.progress=lines',
];

/** A tiny-preset run into `dir` on the small data, with `sets` (key=value) added. */
function tinyArgs(dir: string, ...sets: string[]): string[] {
  return ['--preset', 'tiny', '--out', dir, ...[...sets, ...SMALL_DATA].flatMap((s) => ['--set', s])];
}

function jsonl(path: string): Record<string, unknown>[] {
  return readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out[p] = readFileSync(p).toString('base64');
    }
  };
  walk(dir);
  return out;
}

describe('switchyard-train', () => {
  it('documents every option in --help', async () => {
    const r = await cli(['--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/train\.steps\s+optimizer steps\n\s+type: int >= 1; default: 250/);
    expect(r.out).toMatch(/balance\.method/);
  });

  it('prints its version, and option errors as one plain sentence', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    expect(await cli(['--version'])).toEqual({ code: 0, out: `switchyard-train ${pkg.version}\n`, err: '' });
    expect(await cli(['--verbose'])).toEqual({
      code: 2,
      out: '',
      err: 'error: unknown option --verbose (see switchyard-train --help)\n',
    });
    expect((await cli(['eval', '--checkpoint'])).err).toBe(
      'error: --checkpoint needs a value (see switchyard-train --help)\n',
    );
  });

  describe.skipIf(onCpu)('training (wasm)', () => {
    const runDir = join(root, 'run');
    let result: { code: number; out: string; err: string };

    beforeAll(async () => {
      result = await cli(tinyArgs(runDir, 'train.steps=10', 'checkpoint.every=5', 'eval.every=5'));
    }, 120_000);

    it('trains, evaluates, checkpoints and ends with the two result lines', () => {
      expect(result.err).toBe('');
      expect(result.code).toBe(0);
      const lines = result.out.trim().split('\n');
      expect(lines[lines.length - 2]).toMatch(/^final val_loss: \d+\.\d{4} {2}unigram val_loss: \d+\.\d{4}$/);
      expect(lines[lines.length - 1]).toBe(`checkpoint: ${join(runDir, 'checkpoints', 'final')}`);
      expect(result.out).toMatch(/^step 1\/10 \| loss /m);
      expect(existsSync(join(runDir, 'checkpoints', 'step-000005', 'manifest.json'))).toBe(true);
    });

    it('writes metrics.jsonl, eval.jsonl, plots and report.md', () => {
      const steps = jsonl(join(runDir, 'metrics.jsonl'));
      expect(steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      for (const s of steps) {
        for (const k of ['loss', 'lr', 'tokensPerSec', 'maxVioBatch'])
          expect(Number.isFinite(s[k])).toBe(true);
        // The phases add up to no more than the step's wall time; one rank spends nothing on sync.
        const p = s.phaseMs as { compute: number; sync: number; clip: number; optimizer: number };
        expect(Object.keys(p).sort()).toEqual(['clip', 'compute', 'optimizer', 'sync']);
        expect(p.sync).toBe(0);
        expect(p.compute).toBeGreaterThan(0);
        const stepMs = ((steps[0]!.tokens as number) * 1000) / (s.tokensPerSec as number);
        expect(p.compute + p.clip + p.optimizer).toBeLessThanOrEqual(stepMs + 1);
      }
      const evals = jsonl(join(runDir, 'eval.jsonl'));
      expect(evals.map((e) => e.step)).toEqual([5, 10]);
      const last = evals[1]!;
      expect(Object.keys(last.perDomainLoss as object).sort()).toEqual(['humor', 'news', 'science_fiction']);
      expect(Number.isFinite(last.valLoss)).toBe(true);
      expect(Number.isFinite(last.maxVioGlobal)).toBe(true);
      const spec = last.specialization as number[][][];
      expect(spec).toHaveLength(1); // tiny: one MoE layer
      for (const row of spec[0]!) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(2, 5); // K = 2 selections per token
      const plots = readdirSync(join(runDir, 'plots'));
      for (const p of ['loss', 'domain-loss', 'maxvio', 'expert-load-layer0', 'specialization']) {
        expect(plots).toContain(`${p}.svg`);
        expect(plots).toContain(`${p}.png`);
      }
      const report = readFileSync(join(runDir, 'report.md'), 'utf8');
      expect(report).toMatch(/\| final validation loss \| \d/);
      expect(report).toContain('(plots/loss.png)');
    });

    it('resumes to the same trajectory as the uninterrupted run', async () => {
      const copy = join(root, 'resumed');
      cpSync(runDir, copy, { recursive: true });
      rmSync(join(copy, 'checkpoints', 'final'), { recursive: true });
      const r = await cli(['--resume', join(copy, 'checkpoints', 'step-000005')]);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/resuming .* at step 5/);
      const a = jsonl(join(runDir, 'metrics.jsonl'));
      const b = jsonl(join(copy, 'metrics.jsonl'));
      expect(b.map((s) => s.step)).toEqual(a.map((s) => s.step));
      for (let i = 5; i < 10; i++) {
        expect(b[i]!.loss as number).toBeCloseTo(a[i]!.loss as number, 5);
        expect(b[i]!.maxVioBatch).toEqual(a[i]!.maxVioBatch);
      }
      expect(jsonl(join(copy, 'eval.jsonl'))[1]!.valLoss as number).toBeCloseTo(
        jsonl(join(runDir, 'eval.jsonl'))[1]!.valLoss as number,
        5,
      );
    }, 60_000);

    it("resumes exactly with the global loss pooled over the whole step (globalPool 'step', router jitter on)", async () => {
      const dir = join(root, 'step-pool');
      const sets = [
        'train.steps=6',
        'train.gradAccum=2',
        'checkpoint.every=3',
        'eval.every=0',
        'log.plots=false',
        'balance.method=global',
        'balance.globalPool=step',
        'model.moe.router.jitterEps=0.05',
      ];
      const full = await cli(tinyArgs(dir, ...sets));
      expect(full.err).toBe('');
      expect(full.code).toBe(0);
      const copy = join(root, 'step-pool-resumed');
      cpSync(dir, copy, { recursive: true });
      rmSync(join(copy, 'checkpoints', 'final'), { recursive: true });
      const r = await cli(['--resume', join(copy, 'checkpoints', 'step-000003')]);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      const a = jsonl(join(dir, 'metrics.jsonl'));
      const b = jsonl(join(copy, 'metrics.jsonl'));
      expect(b.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6]);
      for (let i = 3; i < 6; i++) {
        expect(b[i]!.loss as number).toBeCloseTo(a[i]!.loss as number, 5);
        expect(b[i]!.auxLoss as number).toBeCloseTo(a[i]!.auxLoss as number, 7);
        expect(b[i]!.expertLoad).toEqual(a[i]!.expertLoad);
      }
    }, 90_000);

    it('stops on request (Ctrl-C) with a checkpoint, run.json interrupted and the command that resumes exactly', async () => {
      const dir = join(root, 'interrupted');
      const args = tinyArgs(dir, 'train.steps=10', 'checkpoint.every=5', 'eval.every=5', 'log.every=1');
      const r = await cli(args, { stopAt: 'step 3/10' });
      expect(r.err).toBe('');
      expect(r.code).toBe(130);
      const ckpt = join(dir, 'checkpoints', 'step-000003');
      expect(r.out).toContain(`interrupted after step 3 of 10; checkpoint saved: ${ckpt}\n`);
      expect(r.out.trim().split('\n').pop()).toBe(`continue with: switchyard-train --resume ${dir}`);
      expect(JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8'))).toMatchObject({
        status: 'interrupted',
        interruptedAt: 3,
      });
      const resumed = await cli(['--resume', dir]);
      expect(resumed.code).toBe(0);
      expect(resumed.out).toMatch(/resuming .* at step 3 from .*step-000003/);
      const a = jsonl(join(runDir, 'metrics.jsonl'));
      const b = jsonl(join(dir, 'metrics.jsonl'));
      expect(b.map((s) => s.loss)).toEqual(a.map((s) => s.loss));
      expect(JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8'))).not.toHaveProperty('interruptedAt');
    }, 60_000);

    it('extends a finished run with --set train.steps, passing over a damaged newest checkpoint', async () => {
      const copy = join(root, 'extended');
      cpSync(runDir, copy, { recursive: true });
      const refused = await cli(['--resume', copy]);
      expect(refused.code).toBe(1);
      expect(refused.err).toMatch(
        /already finished all 10 steps; to train it longer, add --set train\.steps=N with N > 10/,
      );
      expect((await cli(['--resume', copy, '--set', 'train.lr=1'])).err).toMatch(
        /--resume takes only --set train\.steps=N/,
      );
      // The final checkpoint (step 10) is damaged: the run continues from step-000005 instead.
      const weights = join(copy, 'checkpoints', 'final', 'model.safetensors');
      const bytes = readFileSync(weights);
      bytes[bytes.length - 3] = bytes[bytes.length - 3]! ^ 0xff;
      writeFileSync(weights, bytes);
      const r = await cli(['--resume', copy, '--set', 'train.steps=12']);
      expect(r.code).toBe(0);
      expect(r.err).toMatch(
        /^warning: checkpoint .*final does not verify \(.*model\.safetensors is corrupted.*\); resuming from an older one\n$/,
      );
      expect(r.out).toMatch(/resuming .* at step 5 from .*step-000005/);
      expect(r.out).toMatch(/extending the run from 10 to 12 steps/);
      expect(jsonl(join(copy, 'metrics.jsonl')).map((s) => s.step)).toEqual([
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
      ]);
      expect(JSON.parse(readFileSync(join(copy, 'run.json'), 'utf8')).config.train.steps).toBe(12);
    }, 60_000);

    it('eval scores a text file with windows of seqLen + 1 tokens overlapping by one', async () => {
      const text = join(root, 'held-out.txt');
      writeFileSync(text, 'The jury said it did find that many of the laws are outmoded. '.repeat(12));
      const ckpt = join(runDir, 'checkpoints', 'final');
      const r = await cli(['eval', '--checkpoint', ckpt, '--text', text]);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      const m = /^loss: (\d+\.\d+) tokens: (\d+)\n$/.exec(r.out);
      expect(m).not.toBeNull();
      // Independent check: per-token cross-entropy from the logits of each window.
      const { model, tokenizer } = await loadCheckpoint(ckpt);
      const ids = tokenizer.encode(readFileSync(text, 'utf8'));
      const S = 32; // the tiny preset's train.seqLen
      let nll = 0;
      let n = 0;
      for (let start = 0; start + 1 < ids.length; start += S) {
        const w = ids.slice(start, start + S + 1);
        nll += tf.tidy(() => {
          const x = tf.tensor2d([w.slice(0, -1)], [1, w.length - 1], 'int32');
          const lp = logSoftmax(
            model.forward(x, { training: false }).logitsBSV.reshape([w.length - 1, -1]) as tf.Tensor2D,
          );
          const v = lp.arraySync() as number[][];
          return w.slice(1).reduce((a, t, i) => a - v[i]![t]!, 0);
        });
        n += w.length - 1;
      }
      model.dispose();
      expect(Number(m![2])).toBe(ids.length - 1);
      expect(n).toBe(ids.length - 1);
      expect(Number(m![1])).toBeCloseTo(nll / n, 4);
    }, 60_000);

    it('generate writes the prompt and a seeded continuation; the report holds one with its command', async () => {
      const ckpt = join(runDir, 'checkpoints', 'final');
      const args = [
        'generate',
        '--checkpoint',
        ckpt,
        '--prompt',
        'The jury',
        '--max-tokens',
        '12',
        '--seed',
        '3',
      ];
      const a = await cli(args);
      expect(a.err).toBe('');
      expect(a.code).toBe(0);
      expect(a.out).toMatch(/^The jury.+\n$/s);
      expect(await cli(args)).toEqual(a);
      const report = readFileSync(join(runDir, 'report.md'), 'utf8');
      const m =
        /## Sample\n\n.*\n\n```sh\n(switchyard-train generate .*)\n```\n\n````text\n([\s\S]*?)\n````/.exec(
          report,
        );
      expect(m, 'the report sample').not.toBeNull();
      const command = m![1]!.split(' ').slice(1);
      expect(command).toEqual([
        'generate',
        '--checkpoint',
        ckpt,
        '--prompt',
        'The',
        '--max-tokens',
        '48',
        '--temperature',
        '0.8',
        '--top-k',
        '40',
        '--seed',
        '1234',
      ]);
      expect((await cli(command)).out).toBe(`${m![2]}\n`);
    }, 60_000);

    it('generate refuses bad flags with one line naming the flag', async () => {
      const ckpt = join(runDir, 'checkpoints', 'final');
      for (const [args, message] of [
        [['--prompt', 'x'], /^error: generate needs --checkpoint DIR and --prompt TEXT/],
        [
          ['--checkpoint', ckpt, '--prompt', 'x', '--top-p', '0'],
          /^error: --top-p: expected a number in \(0, 1\], got "0"/,
        ],
        [
          ['--checkpoint', ckpt, '--prompt', 'x', '--max-tokens', '2.5'],
          /^error: --max-tokens: expected an integer >= 1, got "2\.5"/,
        ],
        [['--checkpoint', ckpt, '--prompt', ''], /^error: --prompt: expected some text, got an empty prompt/],
        [
          ['--checkpoint', ckpt, '--prompt', 'x', '--set', 'a=1'],
          /^error: --out and --set apply to train and experiment only, not to generate/,
        ],
      ] as const) {
        const r = await cli(['generate', ...args]);
        expect(r.code, args.join(' ')).toBe(2);
        expect(r.err).toMatch(message);
        expect(r.err.trim().split('\n')).toHaveLength(1);
      }
    });

    it('says "no validation set" and never prints NaN without one (data.valFraction = 0)', async () => {
      const dir = join(root, 'no-val');
      const r = await cli(tinyArgs(dir, 'train.steps=4', 'eval.every=2', 'data.valFraction=0'));
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      const report = readFileSync(join(dir, 'report.md'), 'utf8');
      for (const text of [r.out, report]) expect(text).not.toMatch(/NaN|n\/a/);
      expect(r.out).toMatch(/no validation set \(data\.valFraction = 0\): no evaluations/);
      expect(r.out).not.toMatch(/^eval step/m);
      expect(r.out).toMatch(
        /^final train_loss \(EMA 0\.9\): \d+\.\d{4} {2}\(no validation set: data\.valFraction = 0\)$/m,
      );
      expect(report).toContain('| validation | no validation set (data.valFraction = 0) |');
      expect(JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8'))).not.toHaveProperty('unigramValLoss');
    }, 60_000);

    it('refuses an output folder holding another run, changing nothing', async () => {
      const before = snapshot(runDir);
      const r = await cli(tinyArgs(runDir));
      expect(r.code).toBe(1);
      expect(r.err).toMatch(
        /^error: output folder .* holds another run \(run\.json\); continue it with --resume/,
      );
      expect(r.err.trim().split('\n')).toHaveLength(1);
      expect(snapshot(runDir)).toEqual(before);
    });

    it('refuses a corrupt checkpoint given to --resume, changing nothing', async () => {
      const copy = join(root, 'corrupt');
      cpSync(runDir, copy, { recursive: true });
      const weights = join(copy, 'checkpoints', 'step-000005', 'model.safetensors');
      const bytes = readFileSync(weights);
      bytes[bytes.length - 3] = bytes[bytes.length - 3]! ^ 0xff;
      writeFileSync(weights, bytes);
      const before = snapshot(copy);
      const r = await cli(['--resume', join(copy, 'checkpoints', 'step-000005')]);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/^error: .*checkpoint.*model\.safetensors/i);
      expect(snapshot(copy)).toEqual(before);
    });

    it('stops on a non-finite loss naming the step and layer, keeping the last good checkpoint', async () => {
      const dir = join(root, 'nan');
      const r = await cli(
        tinyArgs(dir, 'train.steps=10', 'checkpoint.every=5', 'debug.nanAtStep=7', 'debug.nanLayer=1'),
      );
      expect(r.code).toBe(1);
      expect(r.err).toMatch(
        /^error: (loss is NaN|non-finite activations) \(micro-batch 1 of 1\) at step 7, first appearing in layer 1 \(weights of layers\.1\.attn\.q hold NaN or Infinity\); training stopped, the last good checkpoint .*step-000005 is intact\n$/,
      );
      expect(jsonl(join(dir, 'metrics.jsonl')).map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(existsSync(join(dir, 'checkpoints', 'final'))).toBe(false);
      const { model } = await loadCheckpoint(join(dir, 'checkpoints', 'step-000005'));
      expect(
        tf.tidy(() => model.namedVariables().get('layers.1.attn.q')!.isFinite().all().dataSync()[0]),
      ).toBe(1);
      model.dispose();
      expect(JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8')).status).toBe('failed');
    }, 60_000);
  });

  it.skipIf(onCpu)(
    'runs an experiment into one folder per arm and a comparison report, reusing finished arms',
    async () => {
      const dir = join(root, 'experiment');
      const sets = [
        'train.steps=2',
        'train.microBatchSize=2',
        'train.gradAccum=1',
        'train.seqLen=16',
        'eval.every=0',
        'eval.tokensPerDomain=64',
        'tokenizer.vocabSize=300',
        'log.plots=false',
        'log.progress=quiet',
        'data.corpus=brown',
        'data.genres=[news, humor]',
        'data.maxTextsPerDomain=3',
      ];
      const args = [
        'experiment',
        'capacity',
        '--out',
        dir,
        '--seeds',
        '1',
        ...sets.flatMap((s) => ['--set', s]),
      ];
      // Two arms here, then the other two in two child processes at once.
      const part = await cli([...args, '--arms', 'cf-1.0,dropless']);
      expect(part.err).toBe('');
      expect(part.code).toBe(0);
      expect(part.out.trim().split('\n').pop()).toBe('arms still to run: cf-1.25, cf-2.0');
      expect(existsSync(join(dir, 'report.md'))).toBe(false);
      // cf-1.25 as a run killed before its first checkpoint left it: it is started again.
      mkdirSync(join(dir, 'cf-1.25'));
      writeFileSync(
        join(dir, 'cf-1.25', 'run.json'),
        JSON.stringify({ name: 'capacity-cf-1.25', status: 'running' }),
      );
      writeFileSync(join(dir, 'cf-1.25', 'metrics.jsonl'), '{"step":1,"loss":9}\n');
      const r = await cli([...args, '--jobs', '2']);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      // The children run with --no-report; nothing tells the user to rerun without it.
      expect(r.out).not.toMatch(/rerun without|arms still to run: cf-/);
      expect(r.out).toMatch(/\[cf-2\.0\] arms finished: cf-2\.0/);
      expect(r.out).toMatch(/arm cf-1\.25 started in its own process/);
      expect(r.out).toMatch(/arm cf-2\.0 started in its own process/);
      expect(readdirSync(join(dir, 'logs')).sort()).toEqual(['cf-1.25.log', 'cf-2.0.log']);
      expect(readFileSync(join(dir, 'logs', 'cf-1.25.log'), 'utf8')).toMatch(
        /arm cf-1\.25 stopped before its first checkpoint; starting it again/,
      );
      expect(readFileSync(join(dir, 'cf-1.25', 'metrics.jsonl'), 'utf8')).not.toContain('"loss":9');
      expect(readFileSync(join(dir, 'logs', 'cf-2.0.log'), 'utf8')).toMatch(
        /switchyard-train: run capacity-cf-2\.0/,
      );
      expect(r.out.trim().split('\n').pop()).toBe(`report: ${join(dir, 'report.md')}`);
      const report = readFileSync(join(dir, 'report.md'), 'utf8');
      for (const arm of ['cf-1.0', 'cf-1.25', 'cf-2.0', 'dropless']) {
        expect(report).toMatch(new RegExp(`^\\| ${arm.replace('.', '\\.')} \\| \\d`, 'm'));
        expect(existsSync(join(dir, arm, 'run.json'))).toBe(true);
      }
      expect(report).toContain('## What the literature reports, and what this run shows');
      const results = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8'));
      expect(results.arms).toHaveLength(4);
      expect(results.arms[3].trainDropRate).toBe(0);
      // Every arm is also evaluated dropless: nothing dropped there.
      for (const a of results.arms) expect(a.extraEvals.dropless.dropRate).toBe(0);
      expect(report).toMatch(/\| val loss, eval dropless \|/);
      // The unigram baseline comes from each arm's run.json (these arms write no report of their own).
      for (const a of results.arms) expect(Number.isFinite(a.unigramValLoss)).toBe(true);
      expect(readdirSync(join(dir, 'plots'))).toContain('val-loss.svg');
      const again = await cli(args);
      expect(again.code).toBe(0);
      expect(again.out).toMatch(/arm cf-1\.0 already finished/);
      // A folder holding some other run is never cleared.
      const other = join(root, 'experiment-other');
      mkdirSync(join(other, 'cf-1.0'), { recursive: true });
      const foreign = JSON.stringify({ name: 'my-own-run', status: 'running' });
      writeFileSync(join(other, 'cf-1.0', 'run.json'), foreign);
      const refused = await cli([
        'experiment',
        'capacity',
        '--out',
        other,
        '--arms',
        'cf-1.0',
        ...sets.flatMap((s) => ['--set', s]),
      ]);
      expect(refused.code).not.toBe(0);
      expect(refused.err).toMatch(/holds another run/);
      expect(readFileSync(join(other, 'cf-1.0', 'run.json'), 'utf8')).toBe(foreign);
    },
    120_000,
  );

  it('rejects unknown keys, bad values and unknown flags before creating anything', async () => {
    const dir = join(root, 'never');
    for (const args of [
      ['--set', 'train.stepz=3'],
      ['--set', 'train.steps=-1'],
      ['--set', 'train.lr=fast'],
      ['--bogus'],
      ['--resume', dir, '--set', 'train.steps=3'],
    ]) {
      const r = await cli(['--preset', 'tiny', '--out', dir, ...args]);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/^error: /);
      expect(existsSync(dir)).toBe(false);
    }
    const r = await cli(['--preset', 'tiny', '--out', dir, '--set', 'train.stepz=3']);
    expect(r.err).toBe('error: invalid configuration (preset tiny + --set):\n  train.stepz: unknown key\n');
    const exp = join(root, 'never-exp');
    for (const [args, message] of [
      [
        ['experiment', 'capacity', '--arms', 'cf-3'],
        /--arms: unknown arm "cf-3" of experiment capacity; expected a comma-separated subset of cf-1\.0, cf-1\.25, cf-2\.0, dropless/,
      ],
      [['experiment', 'capacity', '--jobs', '0'], /--jobs: expected a positive integer, got "0"/],
      [
        ['--preset', 'tiny', '--jobs', '2'],
        /--arms, --jobs, --no-report and --seeds apply to experiment only, not to train/,
      ],
    ] as const) {
      const r = await cli([...args, '--out', exp]);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(message);
      expect(existsSync(exp)).toBe(false);
    }
  });

  it('rejects a missing data file with one error and no output folder', async () => {
    const dir = join(root, 'nodata');
    const r = await cli([
      '--preset',
      'tiny',
      '--out',
      dir,
      '--set',
      `data.files=[${join(root, 'missing.jsonl')}]`,
    ]);
    expect(r.code).toBe(1);
    expect(r.err).toBe(`error: data file ${join(root, 'missing.jsonl')} does not exist\n`);
    expect(existsSync(dir)).toBe(false);
  });
});
