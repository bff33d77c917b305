// Shared tsup settings for the library packages: ESM + .d.ts from src/index.ts, for Node 20.
import { defineConfig, type Options } from 'tsup';

export function defineLibraryConfig(overrides: Options = {}) {
  return defineConfig({
    entry: ['src/index.ts'],
    format: ['esm'],
    dts: true,
    sourcemap: true,
    clean: true,
    target: 'node20',
    ...overrides,
  });
}
