/**
 * Text rendering of a {@link SimulationReport}: a summary, per-layer compute vs communication,
 * stages, memory per GPU and bytes per link tier. Units: seconds shown as s or ms, bytes as GB.
 */
import type { SimulationReport } from './simulate';

const ms = (s: number) => `${(s * 1e3).toFixed(2)} ms`;
const sec = (s: number) => `${s.toFixed(3)} s`;
const gb = (b: number) => `${(b / 1e9).toFixed(1)} GB`;
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
    `throughput           ${(r.tokensPerStep / r.stepTime / 1e6).toFixed(2)} M tokens/s; ` +
      `${(r.gpuHoursPerTrillionTokens / 1e3).toFixed(1)}K GPU-hours per trillion tokens`,
    `parameters           ${(r.params.total / 1e9).toFixed(1)}B total, ${(r.params.active / 1e9).toFixed(1)}B activated; ` +
      `${(r.modelFlopsPerToken / 1e9).toFixed(1)} GFLOP per token (fwd+bwd)`,
    `memory per GPU       ${gb(heaviest.total)} on rank ${heaviest.rank} (weights ${gb(heaviest.weights)}, ` +
      `gradients ${gb(heaviest.gradients)}, optimizer ${gb(heaviest.optimizer)}, activations ${gb(heaviest.activations)} ` +
      `= ${heaviest.peakActivations} micro-batch-stages); ${r.peakMemory.fits ? 'fits' : 'does NOT fit'} ${gb(r.peakMemory.hbm)}`,
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
