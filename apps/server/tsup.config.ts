import { defineConfig } from 'tsup';

export default defineConfig({
  // engine-worker: the engine's thread (engine/client.ts starts ./engine-worker.js next to the bundle).
  entry: { cli: 'src/cli.ts', index: 'src/index.ts', 'engine-worker': 'src/engine/worker.ts' },
  format: ['esm'],
  dts: false,
  sourcemap: true,
  clean: true,
  target: 'node20',
  banner: { js: '#!/usr/bin/env node' },
});
