// Training-step throughput of the presets, and generation with the KV cache vs full recomputation,
// on the selected backend (wasm by default).
//   pnpm --filter @switchyard/model bench            (SWITCHYARD_BACKEND=cpu to compare; BENCH_PRESET=tiny|small)
// Achieved GFLOP/s use modelCost(config).trainFlopsPerToken (3 x forward matmul FLOPs).
import { disposeRoutingPlan } from '@switchyard/routing';
import { initBackend, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { MoETransformerLM, modelCost, type PresetName, presets } from '../src/index';

const info = await initBackend({
  backend: (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | undefined) ?? 'wasm',
});
const which = (process.env.BENCH_PRESET ?? 'tiny,small').split(',') as PresetName[];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(`backend: ${info.name} (${info.reason})`);

for (const name of which) {
  const config = presets[name];
  const B = name === 'tiny' ? 8 : 16;
  const S = config.maxSeqLen;
  const model = new MoETransformerLM(config, new Rng(0));
  const opt = tf.train.adam(1e-3);
  const rng = new Rng(1);
  const batch = () =>
    tf.tensor2d(
      Array.from({ length: B * S }, () => rng.int(config.vocabSize)),
      [B, S],
      'int32',
    ) as Tensor2D;
  const step = () => {
    const x = batch();
    const y = batch();
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const loss = opt.minimize(
      () => {
        const r = model.loss(x, y, { training: true, rng });
        r.plans.forEach(disposeRoutingPlan);
        return r.loss;
      },
      true,
      model.trainableVariables(),
    )!;
    loss.dataSync();
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(c0);
    tf.dispose([x, y, loss]);
    return { ms, cpuMs: (cpu.user + cpu.system) / 1000 };
  };
  step(); // warm-up
  const reps = info.name === 'cpu' || name === 'small' ? 3 : 7;
  const runs = Array.from({ length: reps }, step);
  const ms = median(runs.map((r) => r.ms));
  const cpuMs = median(runs.map((r) => r.cpuMs));
  const flops = modelCost(config, S).trainFlopsPerToken * B * S;
  // Wall time suffers when other processes share the cores; process CPU time much less so.
  console.log(
    `${name.padEnd(6)} train step B=${B} S=${S}: wall ${ms.toFixed(0)} ms (${((B * S) / (ms / 1000)).toFixed(0)} tokens/s, ${(flops / ms / 1e6).toFixed(2)} GFLOP/s); ` +
      `CPU ${cpuMs.toFixed(0)} ms (${((B * S) / (cpuMs / 1000)).toFixed(0)} tokens/CPU-s, ${(flops / cpuMs / 1e6).toFixed(2)} GFLOP/CPU-s)`,
  );

  // Generation: KV cache vs recomputing the whole prefix for every new token.
  const prompt = Array.from({ length: 8 }, (_, i) => (i * 7) % config.vocabSize);
  const n = name === 'tiny' ? 48 : 32;
  model.generate(prompt, { maxNewTokens: 2, greedy: true });
  let t0 = performance.now();
  const cached = model.generate(prompt, { maxNewTokens: n, greedy: true });
  const cachedMs = performance.now() - t0;
  t0 = performance.now();
  const seq = [...prompt];
  for (let i = 0; i < n; i++) {
    const x = tf.tensor2d([seq], undefined, 'int32') as Tensor2D;
    const { logitsBSV, plans } = model.forward(x, { training: false });
    const next = tf.tidy(
      () =>
        logitsBSV
          .slice([0, seq.length - 1, 0], [1, 1, config.vocabSize])
          .reshape([config.vocabSize])
          .argMax()
          .dataSync()[0]!,
    );
    seq.push(next);
    tf.dispose([x, logitsBSV]);
    plans.forEach(disposeRoutingPlan);
  }
  const fullMs = performance.now() - t0;
  const same = JSON.stringify(seq.slice(prompt.length)) === JSON.stringify(cached);
  console.log(
    `${name.padEnd(6)} generate ${n} tokens: KV cache ${((n / cachedMs) * 1000).toFixed(1)} tokens/s, full recomputation ${((n / fullMs) * 1000).toFixed(1)} tokens/s (same tokens: ${same})`,
  );
  console.log(
    `${name} generation KV-cache speedup over full recomputation: ${(fullMs / cachedMs).toFixed(2)}x`,
  );
  opt.dispose();
  model.dispose();
}
