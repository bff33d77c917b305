// Writes the seeded Mixtral-configured parity checkpoint and its input token ids.
//   npx tsx --conditions=@switchyard/source scripts/hf-parity/make-checkpoint.mts OUT_DIR
// OUT_DIR/checkpoint is a Switchyard checkpoint; OUT_DIR/tokens.json holds the input ids [2, 16].
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { saveCheckpoint } from '../../packages/model/src/index';
import { buildParityModel, parityTokens, smallTokenizer } from '../../packages/model/test/fixtures';
import { initBackend } from '../../packages/tensor/src/index';

const out = resolve(process.argv[2] ?? 'hf-parity-out');
await initBackend({ backend: 'cpu' });
const model = buildParityModel();
await saveCheckpoint(join(out, 'checkpoint'), { model, tokenizer: smallTokenizer() });
writeFileSync(join(out, 'tokens.json'), `${JSON.stringify(parityTokens())}\n`);
model.dispose();
process.stdout.write(`wrote ${join(out, 'checkpoint')} and ${join(out, 'tokens.json')}\n`);
