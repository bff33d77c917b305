import { defineConfig } from 'tsup';

export default defineConfig({
  // rank-runtime is what worker threads load (located next to the bundle at run time).
  entry: { index: 'src/index.ts', 'rank-runtime': 'src/internal/rank-runtime.ts' },
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  external: ['zeromq'],
});
