import { defineLibraryConfig } from '../../tsup.shared.ts';

export default defineLibraryConfig({
  // rank-runtime is what worker threads load (located next to the bundle at run time).
  entry: { index: 'src/index.ts', 'rank-runtime': 'src/comm/internal/rank-runtime.ts' },
  external: ['zeromq'],
});
