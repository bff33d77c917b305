import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { availableBackends, BACKEND_NAMES, backendInfo, initBackend } from './backend';
import { isSwitchyardError } from './errors';
import { tf } from './index';

const requested = process.env.SWITCHYARD_BACKEND ?? 'wasm';

describe('backend resolution', () => {
  // A fresh process (this one's backend is set up already); its backend is cpu whatever the pass.
  it.skipIf(requested === 'cpu')('prints no TensorFlow.js advertisement when the cpu backend starts', () => {
    const script = [
      "const { initBackend, tf } = await import('@switchyard/tensor');",
      "await initBackend({ backend: 'cpu' });",
      'tf.tensor1d([1, 2]).dispose();',
      "console.log('tensors', tf.memory().numTensors);",
    ].join('\n');
    const r = spawnSync(
      process.execPath,
      ['--conditions=@switchyard/source', '--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: fileURLToPath(new URL('..', import.meta.url)), encoding: 'utf8', timeout: 60_000 },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toMatch(/Hi, looks like|tfjs-node/);
    expect(r.stdout).toBe('tensors 0\n');
  });

  it('runs on the backend SWITCHYARD_BACKEND names', () => {
    const info = backendInfo();
    expect(info.name).toBe(requested);
    expect(tf.getBackend()).toBe(requested);
    expect(info.isGpu).toBe(false);
    expect(info.reason).toMatch(/requested by/);
  });

  it('is idempotent', async () => {
    const a = await initBackend({ backend: requested as 'wasm' | 'cpu' });
    expect(a).toBe(backendInfo());
  });

  it('lists wasm and cpu as available; tensorflow only when a native package loads', async () => {
    const avail = await availableBackends();
    expect(avail).toContain('wasm');
    expect(avail).toContain('cpu');
    expect(tf.getBackend()).toBe(requested);
  });

  it('rejects an unknown backend name with the list of known ones', async () => {
    await expect(initBackend({ backend: 'metal' as never })).rejects.toThrow(
      /backend "metal" \(from option\) is not known; expected one of tensorflow, wasm, cpu or auto/,
    );
    expect(BACKEND_NAMES).toEqual(['tensorflow', 'wasm', 'cpu']);
  });

  it('naming a backend that cannot load is a clear error with install advice, tried once, quietly', async () => {
    const warnings: unknown[] = [];
    const warn = console.warn;
    console.warn = (...a: unknown[]) => warnings.push(a);
    try {
      for (let i = 0; i < 2; i++) {
        let err: unknown;
        try {
          await initBackend({ backend: 'tensorflow' });
        } catch (e) {
          err = e;
        }
        // On a machine with a working native package this succeeds; here it must fail clearly.
        if (err === undefined) return;
        expect(isSwitchyardError(err, 'BACKEND_UNAVAILABLE')).toBe(true);
        expect((err as Error).message).toMatch(/Available here: .*wasm, cpu/);
        expect((err as Error).message).toMatch(/pnpm add @tensorflow\/tfjs-node-gpu/);
        expect((err as Error).message).toMatch(/@tensorflow\/tfjs-node-gpu: /);
      }
      expect(warnings.filter((w) => String(w).includes('already registered'))).toEqual([]);
    } finally {
      console.warn = warn;
      await initBackend({ backend: requested as 'wasm' | 'cpu' });
    }
    expect(tf.getBackend()).toBe(requested);
  });
});
