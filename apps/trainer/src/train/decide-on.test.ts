// Routing decided on the device (`model.moe.router.decideOn=device`) trains as the host path does:
// the same losses step by step, capacity drops included. Wasm only (training on cpu is too slow).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../config/load';
import { createReporter } from '../reporter';
import { checkRanks } from './setup';
import { train } from './trainer';

const root = mkdtempSync(join(tmpdir(), 'sy-decide-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function losses(decideOn: 'host' | 'device') {
  const config = resolveConfig({
    preset: 'tiny',
    sets: [
      'train.steps=4',
      'eval.every=0',
      'log.plots=false',
      'data.genres=[news, humor, science_fiction]',
      'data.maxTextsPerDomain=5',
      'model.moe.router.capacityFactor=1',
      `model.moe.router.decideOn=${decideOn}`,
      `out=${join(root, decideOn)}`,
    ],
  });
  const result = await train({ config, reporter: createReporter({ mode: 'quiet' }) });
  return result.steps.map((s) => ({ loss: s.loss, dropRate: s.dropRate }));
}

describe.skipIf(process.env.SWITCHYARD_BACKEND === 'cpu')("model.moe.router.decideOn 'device'", () => {
  it('trains with the losses and drop rates of the host path', async () => {
    const host = await losses('host');
    const device = await losses('device');
    expect(host.some((s) => (s.dropRate ?? 0) > 0)).toBe(true);
    expect(device.map((s) => s.dropRate)).toEqual(host.map((s) => s.dropRate));
    device.forEach((s, i) => {
      expect(s.loss).toBeCloseTo(host[i]!.loss, 5);
    });
  }, 120_000);
});

describe('model.moe.router.decideOn with sharded or compressed experts', () => {
  it('is refused before training, naming the setting that conflicts', () => {
    const base = ['model.moe.router.decideOn=device', `out=${join(root, 'refused')}`];
    const ep = resolveConfig({ preset: 'tiny', sets: [...base, 'parallel.expertParallel=2'] });
    expect(() => checkRanks(ep, 2)).toThrow(
      /model\.moe\.router\.decideOn: expected host with parallel\.expertParallel > 1 .*got device/,
    );
    const compressed = resolveConfig({ preset: 'tiny', sets: [...base, 'compress.rank=4'] });
    expect(() => checkRanks(compressed, 1)).toThrow(/expected host with compress\.rank > 0/);
    expect(() => checkRanks(resolveConfig({ preset: 'tiny', sets: base }), 1)).not.toThrow();
  });
});
