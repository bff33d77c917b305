import type { Options } from 'tsup';
import { defineLibraryConfig } from '../../tsup.shared.ts';

// Two builds into dist/: the library (index.js + .d.ts, for Node and browsers) and the
// `switchyard-plan` binary (cli.js, Node only, with a shebang). They run side by side, so the
// library's clean leaves the binary's files alone.
const library = defineLibraryConfig({ clean: ['!cli.js', '!cli.js.map'] });

const cli: Options = {
  entry: ['src/cli.ts'],
  format: ['esm'],
  dts: false,
  sourcemap: true,
  clean: false,
  target: 'node20',
  platform: 'node',
  banner: { js: '#!/usr/bin/env node' },
};

export default [library, cli];
