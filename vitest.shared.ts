// Shared vitest settings for every workspace package: tests run against TypeScript sources (the
// `@switchyard/source` export condition), on the backend named by SWITCHYARD_BACKEND (wasm if unset).
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export interface SwitchyardTestOptions {
  /** Per-test timeout in ms. */
  readonly testTimeout?: number;
  /** Glob patterns of test files. */
  readonly include?: readonly string[];
  /** Initialise the TensorFlow.js backend before each test file (default true; false for packages without tensors). */
  readonly tensors?: boolean;
}

export function defineSwitchyardTestConfig(options: SwitchyardTestOptions = {}) {
  const backend = process.env.SWITCHYARD_BACKEND ?? 'wasm';
  const slow = backend === 'cpu' ? 4 : 1;
  return defineConfig({
    resolve: { conditions: ['@switchyard/source'] },
    ssr: { resolve: { conditions: ['@switchyard/source'] } },
    test: {
      include: [...(options.include ?? ['src/**/*.test.ts', 'test/**/*.test.ts'])],
      exclude: ['**/node_modules/**', '**/dist/**', 'bench/**'],
      setupFiles:
        options.tensors === false
          ? []
          : [fileURLToPath(new URL('./scripts/vitest.setup.ts', import.meta.url))],
      testTimeout: (options.testTimeout ?? 60_000) * slow,
      hookTimeout: 60_000 * slow,
      pool: 'forks',
      reporters: process.env.CI ? ['default'] : ['default'],
    },
  });
}
