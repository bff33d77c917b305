// The library entry must bundle for the browser: no TensorFlow.js, no Node built-ins. esbuild bundles
// it for `platform: 'browser'`, where any `node:` import is an error, and the bundle runs a schedule.
import { build } from 'esbuild';
import { describe, expect, it } from 'vitest';

describe('@switchyard/plan in the browser', () => {
  it('bundles src/index.ts for the browser with no Node built-ins or tensors', async () => {
    const result = await build({
      entryPoints: [new URL('./index.ts', import.meta.url).pathname],
      bundle: true,
      platform: 'browser',
      format: 'esm',
      write: false,
      metafile: true,
      logLevel: 'silent',
    });
    expect(result.errors).toEqual([]);
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.filter((f) => /node_modules|^node:/.test(f))).toEqual([]);
    expect(inputs.some((f) => f.endsWith('src/cli.ts'))).toBe(false);
    const code = result.outputFiles[0]!.text;
    expect(code).not.toMatch(/from ["']node:|require\(["'](fs|path|os|child_process)["']\)/);
    // the bundle works on its own: generate and print a schedule from it
    const mod = await import(`data:text/javascript;base64,${Buffer.from(code).toString('base64')}`);
    const s = mod.generateSchedule({ kind: 'dualpipe', ranks: 4, microBatches: 8 });
    expect(mod.formatScheduleText(s).split('\n')[0]).toMatch(/^rank 0: F0 F0 F0 F1 /);
  });
});
