// The `small` preset's training tokens/s in Switchyard (the real training loop, one thread) beside
// the same model in PyTorch on one thread (benchmarks/peers/torch_small_preset.py), in one run, and
// their ratio. Without PyTorch it prints Switchyard's figure and how to install PyTorch.
//   pnpm --filter switchyard-train bench:peer
//   PEER_PYTHON=python3 (the interpreter), BENCH_STEPS=20, BENCH_WARMUP=4, SWITCHYARD_BACKEND=wasm|cpu
// Both run the same steps with the same first steps left out; the peer trains on random token ids.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend } from '@switchyard/tensor';
import { prepareData } from '../src/data/prepare';
import { median } from '../src/report/report';
import { createReporter } from '../src/reporter';
import { train } from '../src/train/trainer';
import { benchConfig } from './launched';
import { checkTorch, INSTALL_HINT, PEER_SCRIPT, runPeer } from './peer';

const backend = (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | undefined) ?? 'wasm';
const steps = Number(process.env.BENCH_STEPS ?? 20);
const warmup = Number(process.env.BENCH_WARMUP ?? 4);
const python = process.env.PEER_PYTHON ?? 'python3';
const info = await initBackend({ backend });
const torch = checkTorch(python);

const out = mkdtempSync(join(tmpdir(), 'switchyard-peer-'));
try {
  const config = benchConfig(out, backend, steps);
  const vocab = (await prepareData(config)).tokenizer.vocabSize;
  const result = await train({ config, reporter: createReporter({ mode: 'quiet' }) });
  const ours = median(result.steps.slice(warmup).map((s) => s.tokensPerSec));
  const { seqLen, microBatchSize, gradAccum } = config.train;
  console.log(
    `preset small: ${(result.numParams / 1e6).toFixed(2)}M parameters, vocabulary ${vocab}, batch ${gradAccum} x ${microBatchSize} x ${seqLen} tokens, median of steps ${warmup + 1}..${steps}`,
  );
  console.log(`switchyard (${info.name}, one thread): ${ours.toFixed(0)} training tokens/s`);
  if (!torch.ok) {
    console.log(`PyTorch peer skipped: ${torch.reason}`);
    console.log(INSTALL_HINT);
  } else {
    const peer = runPeer(python, { steps, warmup, vocab });
    console.log(
      `pytorch ${peer.torch} (${peer.threads} thread, ${PEER_SCRIPT}): ${peer.tokensPerSec.toFixed(0)} training tokens/s`,
    );
    if (peer.params !== result.numParams)
      console.log(
        `warning: the peer's model has ${peer.params} parameters, switchyard's ${result.numParams}`,
      );
    console.log(`switchyard / pytorch: ${(ours / peer.tokensPerSec).toFixed(2)}`);
  }
} finally {
  rmSync(out, { recursive: true, force: true });
}
