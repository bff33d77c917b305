import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configOptions, helpText } from './help';
import { applySet, parseConfig, presets, readConfigFile, resolveConfig } from './load';
import { trainConfigSchema } from './schema';

describe('parseConfig', () => {
  it('fills every default', () => {
    const c = parseConfig({});
    expect(c.train.steps).toBe(250);
    expect(c.model.preset).toBe('small');
    expect(c.balance.method).toBe('micro');
    expect(c.data.batching).toBe('mixed');
  });

  it('reports every problem with its path, the expectation and the value', () => {
    let message = '';
    try {
      parseConfig({
        train: { stepz: 3, lr: 'fast', steps: 0 },
        balance: { method: 'magic' },
        model: { moe: { router: { k: 1.5 } } },
      });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/train\.stepz: unknown key/);
    expect(message).toMatch(/train\.lr: expected a number, got "fast"/);
    expect(message).toMatch(/train\.steps: expected a value >= 1, got 0/);
    expect(message).toMatch(/balance\.method: expected one of "none", .*"loss-free", got "magic"/);
    expect(message).toMatch(/model\.moe\.router\.k: expected an integer, got 1\.5/);
  });

  it('rejects unknown top-level keys and wrong types', () => {
    expect(() => parseConfig({ steps: 3 })).toThrow(/steps: unknown key/);
    expect(() => parseConfig({ data: { files: 'a.txt' } })).toThrow(
      /data\.files: expected an array, got "a\.txt"/,
    );
    expect(() => parseConfig({ data: { valFraction: 0.9 } })).toThrow(
      /data\.valFraction: expected a value <= 0\.5, got 0\.9/,
    );
  });
});

describe('applySet and resolveConfig', () => {
  it('reads values as YAML scalars and lists', () => {
    let c = applySet({}, 'train.steps=50');
    c = applySet(c, 'train.lr=1e-3');
    c = applySet(c, 'data.genres=[news, humor]');
    c = applySet(c, 'log.plots=false');
    c = applySet(c, 'name=my-run');
    expect(c).toEqual({
      train: { steps: 50, lr: 0.001 },
      data: { genres: ['news', 'humor'] },
      log: { plots: false },
      name: 'my-run',
    });
    expect(() => applySet({}, 'novalue')).toThrow(/--set expects key=value/);
  });

  it('layers defaults, preset, file and --set in that order', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sy-cfg-'));
    const yaml = join(dir, 'run.yaml');
    writeFileSync(yaml, 'train:\n  steps: 7\n  seqLen: 16\nbalance:\n  method: global\n');
    const c = resolveConfig({ preset: 'tiny', file: yaml, sets: ['train.steps=9'] });
    expect(c.name).toBe('tiny');
    expect(c.model.preset).toBe('tiny');
    expect(c.train.seqLen).toBe(16);
    expect(c.train.steps).toBe(9);
    expect(c.balance.method).toBe('global');
    const json = join(dir, 'run.json');
    writeFileSync(json, '{"train": {"steps": 4}}');
    expect(resolveConfig({ file: json }).train.steps).toBe(4);
  });

  it('gives one clear error for a bad file, preset or key', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sy-cfg-'));
    expect(() => readConfigFile(join(dir, 'nope.yaml'))).toThrow(/config file .*nope\.yaml does not exist/);
    writeFileSync(join(dir, 'bad.json'), '{"train": ');
    expect(() => readConfigFile(join(dir, 'bad.json'))).toThrow(/is not valid JSON/);
    writeFileSync(join(dir, 'list.yaml'), '- 1\n- 2\n');
    expect(() => readConfigFile(join(dir, 'list.yaml'))).toThrow(/must hold an object/);
    expect(() => resolveConfig({ preset: 'huge' })).toThrow(
      /unknown preset "huge"; expected one of small, tiny/,
    );
    expect(() => resolveConfig({ sets: ['train.nope=1'] })).toThrow(/train\.nope: unknown key/);
  });

  it('ships presets that are valid and described', () => {
    for (const [name, p] of Object.entries(presets())) {
      expect(typeof p.description).toBe('string');
      expect(() => parseConfig(p, name)).not.toThrow();
    }
  });
});

describe('help', () => {
  it('documents every option with its type and default', () => {
    const text = helpText();
    const options = configOptions();
    const leaves: string[] = [];
    const walk = (o: unknown, prefix: string): void => {
      if (o && typeof o === 'object' && !Array.isArray(o) && prefix.split('.').length < 5) {
        for (const [k, v] of Object.entries(o)) walk(v, prefix ? `${prefix}.${k}` : k);
      } else leaves.push(prefix);
    };
    walk(trainConfigSchema.parse({}), '');
    for (const key of leaves) expect(options.map((o) => o.key)).toContain(key);
    for (const o of options) {
      expect(text).toContain(o.key);
      expect(o.description.length).toBeGreaterThan(3);
    }
    expect(options.find((o) => o.key === 'train.steps')).toMatchObject({ type: 'int >= 1', default: '250' });
    expect(options.find((o) => o.key === 'train.lr')).toMatchObject({
      type: 'number > 0 and <= 1',
      default: '0.003',
    });
    expect(text).toMatch(/--resume DIR/);
    expect(text).toMatch(/tiny\s+Smoke test/);
  });
});
