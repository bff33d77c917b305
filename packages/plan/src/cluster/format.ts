/**
 * Text rendering of a {@link SimulationReport}: a summary, per-layer compute vs communication,
 * stages, memory per GPU and bytes per link tier. Units: seconds shown as s or ms, bytes as GB.
 */
import type { SimulationReport } from './simulate';

const ms = (s: number) => `${(s * 1e3).toFixed(2)} ms`;
const sec = (s: number) => `${s.toFixed(3)} s`;
/** Bytes in GB, or MB below 1 GB (a machine-sized model's figures would all read 0.0 GB). */
const gb = (b: number) => (b >= 1e9 || b === 0 ? `${(b / 1e9).toFixed(1)} GB` : `${(b / 1e6).toFixed(1)} MB`);
/** A count as B (billions) or, below 1e9, M. */
const count = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(1)}B` : `${(n / 1e6).toFixed(2)}M`);
/** Tokens/s as M tokens/s or, below 1e6, tokens/s. */
const rate = (t: number) => (t >= 1e6 ? `${(t / 1e6).toFixed(2)} M tokens/s` : `${t.toFixed(0)} tokens/s`);
/** FLOPs as GFLOP or, below 1e9, MFLOP. */
const flop = (f: number) => (f >= 1e9 ? `${(f / 1e9).toFixed(1)} GFLOP` : `${(f / 1e6).toFixed(2)} MFLOP`);
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

/**
 * Formats a simulation report as plain text (what `switchyard-plan simulate` prints).
 *
 * When to use: to show a report to a person; use the report object (or JSON) for tools.
 *
 * @example
 * ```ts
 * const text = formatSimulationText(simulateCluster({ model: DEEPSEEK_V3, cluster: parseCluster('h800x2048'),
 *   pp: 16, ep: 64, dp: 2, microBatches: 120, schedule: 'dualpipe', globalBatch: 15360, precision: 'fp8' }));
 * text.startsWith('deepseek-v3 on 2048 x h800'); // true
 * ```
 */
export function formatSimulationText(r: SimulationReport): string {
  const lines: string[] = [];
  const heaviest = r.memory.reduce((a, b) => (b.total > a.total ? b : a));
  lines.push(
    `${r.model} on ${r.gpus} x ${r.hardware}: PP ${r.pp} (${r.schedule}), EP ${r.ep}, DP ${r.dp}; ` +
      `${r.microBatches} micro-batches of ${r.microBatchSequences} x ${r.seqLen} tokens per GPU, ` +
      `global batch ${r.globalBatch}`,
    `precision ${r.precision}${r.precision === 'fp8' ? ` (FP8 share of GEMMs ${pct(r.fp8Share)})` : ''}, ` +
      `achievable fraction of peak ${r.efficiency}, F&B overlap ${r.overlap ? 'on' : 'off'}; ` +
      `${r.simulatedRanks} GPUs replayed (one per pipeline rank)`,
    '',
    `step time            ${sec(r.stepTime)} (pipeline ${sec(r.pipelineTime)} + exposed DP sync ${sec(r.dpSync.exposed)})`,
    `bubble               ${sec(r.bubble.mean)} mean, ${sec(r.bubble.max)} max per rank (${pct(r.bubble.fraction)} of the step)`,
    `exposed EP all-to-all ${sec(r.exposedComm.epA2a)} of ${sec(r.exposedComm.epA2aTotal)} (${pct(r.exposedComm.epA2aShare)} of the step)`,
    `MFU                  ${pct(r.mfu)} of BF16 peak, ${pct(r.mfuFp8)} of FP8 peak`,
    `throughput           ${rate(r.tokensPerStep / r.stepTime)}; ` +
      `${(r.gpuHoursPerTrillionTokens / 1e3).toFixed(1)}K GPU-hours per trillion tokens`,
    `parameters           ${count(r.params.total)} total, ${count(r.params.active)} activated; ` +
      `${flop(r.modelFlopsPerToken)} per token (fwd+bwd)`,
    `memory per GPU       ${gb(heaviest.total)} on rank ${heaviest.rank} (weights ${gb(heaviest.weights)}, ` +
      `gradients ${gb(heaviest.gradients)}, optimizer ${gb(heaviest.optimizer)}, activations ${gb(heaviest.activations)} ` +
      `= ${heaviest.peakActivations} micro-batch-stages); ${Number.isFinite(r.peakMemory.hbm) ? `${r.peakMemory.fits ? 'fits' : 'does NOT fit'} ${gb(r.peakMemory.hbm)}` : 'no memory limit in the preset'}`,
    `bytes per GPU/step   NVLink ${gb(r.bytesPerGpu.nvlink)}, InfiniBand ${gb(r.bytesPerGpu.ib)}, WAN ${gb(r.bytesPerGpu.wan)}`,
    '',
    'per layer, one micro-batch   fwd compute  fwd comm   bwd compute  bwd comm   F&B pair (overlapped / serial)',
  );
  for (const l of r.layers) {
    lines.push(
      `  ${l.kind.padEnd(26)} ${ms(l.forwardCompute).padStart(11)} ${ms(l.forwardComm).padStart(10)} ` +
        `${ms(l.backwardCompute).padStart(12)} ${ms(l.backwardComm).padStart(10)}   ` +
        `${ms(l.overlappedPair)} / ${ms(l.serialPair)}`,
    );
  }
  lines.push('', 'stages (layers, F / B / W per micro-batch)');
  for (const s of r.stages) {
    const extras = s.extras.length > 0 ? ` + ${s.extras.join(', ')}` : '';
    lines.push(
      `  stage ${String(s.stage).padStart(2)}: layers ${s.firstLayer}-${s.firstLayer + s.layers - 1}${extras}: ` +
        `${ms(s.F)} / ${ms(s.B)} / ${ms(s.W)}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
