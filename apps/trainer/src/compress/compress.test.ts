/**
 * End-to-end tests of online clustering during training and of `switchyard-train compress`: a tiny
 * run with `compress.clusterEvery`, then its checkpoint compressed (two-level routing, fine-tuning),
 * the report, the compressed checkpoint scored by `eval`, and bad input. Training runs on wasm only.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompressedExperts, loadCompressedCheckpoint } from '@switchyard/compress';
import { BpeTokenizer, MoETransformerLM, presets, saveCheckpoint } from '@switchyard/model';
import { Rng } from '@switchyard/tensor';
import { beforeAll, describe, expect, it } from 'vitest';
import { scoreTokens } from '../eval/score';
import { main } from '../main';
import type { CompressReport } from './report';

const onCpu = process.env.SWITCHYARD_BACKEND === 'cpu';
const root = mkdtempSync(join(tmpdir(), 'sy-compress-'));

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const sink = (add: (s: string) => void) => ({
    write: (s: string) => {
      add(s);
      return true;
    },
    isTTY: false,
  });
  const code = await main(args, { stdout: sink((s) => (out += s)), stderr: sink((s) => (err += s)) });
  return { code, out, err };
}

describe('switchyard-train compress', () => {
  it('refuses bad input with one line naming the constraint (exit 2)', async () => {
    const dense = new MoETransformerLM(
      { ...presets.tiny, moe: { ...presets.tiny.moe, firstDense: 2 } },
      new Rng(0),
    );
    const dir = join(root, 'dense');
    const tokenizer = BpeTokenizer.train(
      { texts: ['a small text for a small tokenizer'] },
      { vocabSize: 270 },
    );
    await saveCheckpoint(dir, { model: dense, tokenizer });
    dense.dispose();
    const noMoE = await cli([
      'compress',
      '--checkpoint',
      dir,
      '--groups',
      '2',
      '--rank',
      '4',
      '--out',
      join(root, 'x'),
    ]);
    expect(noMoE.code).toBe(2);
    expect(noMoE.err).toMatch(
      /^error: checkpoint .*dense has no MoE layers .*there are no experts to compress\n$/,
    );
    const missing = await cli(['compress', '--checkpoint', dir, '--rank', '4']);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/compress needs --groups/);
    const help = await cli(['compress', '--help']);
    expect(help.out).toMatch(/--two-level K/);
  });

  describe.skipIf(onCpu)('on a trained checkpoint (wasm)', () => {
    const runDir = join(root, 'run');
    const ckpt = join(runDir, 'checkpoints', 'final');
    beforeAll(async () => {
      const r = await cli([
        '--preset',
        'tiny',
        '--out',
        runDir,
        ...['train.steps=10', 'compress.clusterEvery=5', 'compress.lambda=0.5', 'log.progress=quiet'].flatMap(
          (s) => ['--set', s],
        ),
        ...['data.genres=[news, humor]', 'data.maxTextsPerDomain=4'].flatMap((s) => ['--set', s]),
      ]);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
    }, 120_000);

    it('logs the groups and their Jaccard stability in metrics.jsonl every compress.clusterEvery steps', () => {
      const steps = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map(
          (l) =>
            JSON.parse(l) as { step: number; clustering?: { jaccard: number | null; groupOf: number[][] } },
        );
      expect(steps.filter((s) => s.clustering).map((s) => s.step)).toEqual([5, 10]);
      expect(steps[4]!.clustering!.jaccard).toBeNull();
      const j = steps[9]!.clustering!.jaccard!;
      expect(j).toBeGreaterThanOrEqual(0);
      expect(j).toBeLessThanOrEqual(1);
      for (const s of [steps[4]!, steps[9]!])
        expect([...s.clustering!.groupOf[0]!].sort()).toEqual([0, 0, 1, 1]);
    });

    it('compresses, reports, fine-tunes and writes a checkpoint that eval scores like the compressed model', async () => {
      const out = join(root, 'c');
      const r = await cli([
        'compress',
        ...['--checkpoint', ckpt, '--groups', '2', '--rank', '4', '--out', out],
        ...['--two-level', '1', '--finetune-steps', '2', '--lambda', '0.5', '--calibration-batches', '2'],
      ]);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/^before: val_loss \d/m);
      const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as CompressReport;
      // tiny: D 32, F 32, E 4 -> K 2; ratio 2 / (1 + 2 * 4 * (1/32 + 1/32)) = 4/3
      expect(report.ratio.formula).toBeCloseTo(4 / 3, 12);
      expect(report.ratio.measured).toBeCloseTo(4 / 3, 12);
      expect(report.params.expertsBefore - report.params.expertsAfter).toBe(
        report.params.before - report.params.after,
      );
      expect(report.layers[0]!.errors).toHaveLength(4);
      expect([...report.layers[0]!.originalExpert!].sort()).toEqual([0, 1, 2, 3]);
      expect(Object.keys(report.evalLoss.afterFinetune!.perDomainLoss).sort()).toEqual(['humor', 'news']);
      expect(report.finetune!.losses).toHaveLength(2);
      expect(readFileSync(join(out, 'report.md'), 'utf8')).toMatch(
        /\| routed experts \| \d+ \| \d+ \| 1\.333x \|/,
      );

      const text = join(root, 'held-out.txt');
      writeFileSync(text, 'The jury said it did find that many of the laws are outmoded. '.repeat(6));
      const scored = await cli(['eval', '--checkpoint', join(out, 'checkpoint'), '--text', text]);
      expect(scored.code).toBe(0);
      const loss = Number(/^loss: (\d+\.\d+)/.exec(scored.out)![1]);
      const loaded = await loadCompressedCheckpoint(join(out, 'checkpoint'));
      expect(loaded.model.moeLayers()[0]!.experts).toBeInstanceOf(CompressedExperts);
      expect((loaded.config.moe.router as { groupLimited?: unknown }).groupLimited).toEqual({
        numGroups: 2,
        groupTopK: 1,
      });
      const ids = loaded.tokenizer.encode(readFileSync(text, 'utf8'));
      expect(scoreTokens(loaded.model, ids, 32).loss).toBeCloseTo(loss, 4);
      loaded.model.dispose();

      const again = await cli([
        'compress',
        '--checkpoint',
        join(out, 'checkpoint'),
        '--groups',
        '2',
        '--rank',
        '4',
        '--out',
        join(root, 'd'),
      ]);
      expect(again.code).toBe(2);
      expect(again.err).toMatch(/is already compressed/);
    }, 120_000);

    it('experiment compress: every arm with its ratio, loss and error; a report and a plot', async () => {
      const out = join(root, 'exp');
      const r = await cli([
        'experiment',
        'compress',
        '--checkpoint',
        ckpt,
        '--groups',
        '2',
        '--ranks',
        '2',
        '--out',
        out,
      ]);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as {
        arms: { id: string; ratio: number; valLoss: number; meanError: number }[];
      };
      expect(res.arms.map((a) => a.id)).toEqual([
        'uncompressed',
        'fused-g2-r2',
        'structural-g2-r2',
        'functional-g2-r2',
        'low-rank-r10', // 2 + 2 * 32 * 32 / (4 * 64) = 10: the same parameters as 2 bases + rank-2 residuals
        'merged-g2',
      ]);
      const byId = Object.fromEntries(res.arms.map((a) => [a.id, a]));
      expect(byId['merged-g2']!.ratio).toBe(2);
      expect(byId['fused-g2-r2']!.ratio).toBeCloseTo(2 / (1 + 2 * 2 * (1 / 32 + 1 / 32)), 12);
      expect(byId['low-rank-r10']!.ratio).toBeCloseTo(byId['fused-g2-r2']!.ratio, 12);
      for (const a of res.arms) expect(Number.isFinite(a.valLoss)).toBe(true);
      expect(byId.uncompressed!.meanError).toBe(0);
      expect(readFileSync(join(out, 'report.md'), 'utf8')).toContain('| merged-g2 | merged |');
      expect(readFileSync(join(out, 'plots', 'loss-vs-ratio.svg'), 'utf8')).toMatch(/^<svg/);
    }, 120_000);

    it('trains compressed from scratch (compress.rank), checkpoints the factors and resumes to the same losses', async () => {
      const dir = join(root, 'scratch');
      const sets = [
        'train.steps=6',
        'checkpoint.every=3',
        'eval.every=3',
        'compress.rank=4',
        'compress.groups=2',
      ];
      const data = ['data.genres=[news, humor]', 'data.maxTextsPerDomain=4', 'log.progress=quiet'];
      const r = await cli([
        '--preset',
        'tiny',
        '--out',
        dir,
        ...[...sets, ...data].flatMap((s) => ['--set', s]),
      ]);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      const final = await loadCompressedCheckpoint(join(dir, 'checkpoints', 'final'));
      const bank = final.model.moeLayers()[0]!.experts as CompressedExperts;
      expect(bank).toBeInstanceOf(CompressedExperts);
      expect(bank.rank).toBe(4);
      expect(bank.grouping.groups).toEqual([
        [0, 1],
        [2, 3],
      ]);
      final.model.dispose();
      const copy = join(root, 'scratch-resumed');
      cpSync(dir, copy, { recursive: true });
      rmSync(join(copy, 'checkpoints', 'final'), { recursive: true });
      const resumed = await cli(['--resume', join(copy, 'checkpoints', 'step-000003')]);
      expect(resumed.err).toBe('');
      const losses = (d: string) =>
        readFileSync(join(d, 'metrics.jsonl'), 'utf8')
          .trim()
          .split('\n')
          .map((l) => (JSON.parse(l) as { loss: number }).loss);
      const [a, b] = [losses(dir), losses(copy)];
      expect(b).toHaveLength(6);
      for (let i = 3; i < 6; i++) expect(b[i]!).toBeCloseTo(a[i]!, 5);
      const both = await cli([
        '--preset',
        'tiny',
        '--out',
        join(root, 'bad'),
        '--set',
        'compress.rank=4',
        '--set',
        'compress.clusterEvery=2',
      ]);
      expect(both.code).toBe(2);
      expect(both.err).toMatch(/compress.clusterEvery: expected 0 with compress.rank > 0/);
    }, 120_000);

    it('names the constraint when r or G do not fit the experts', async () => {
      const big = await cli([
        'compress',
        '--checkpoint',
        ckpt,
        '--groups',
        '2',
        '--rank',
        '33',
        '--out',
        join(root, 'e'),
      ]);
      expect(big.code).toBe(2);
      expect(big.err).toMatch(
        /`rank` passed to compressModel\(\) must be <= min\(d_in, d_out\) = min\(32, 32\) = 32/,
      );
      const many = await cli([
        'compress',
        '--checkpoint',
        ckpt,
        '--groups',
        '5',
        '--rank',
        '4',
        '--out',
        join(root, 'f'),
      ]);
      expect(many.code).toBe(2);
      expect(many.err).toMatch(
        /--groups: expected a divisor of E \(4\) for equal-size groups .*G > E leaves a group without experts, got 5/,
      );
    }, 60_000);
  });
});
