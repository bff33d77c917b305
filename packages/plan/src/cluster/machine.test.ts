import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ringBytes } from './comm';
import type { HardwarePreset } from './hardware';
import { linkFromAllReduce, type MachineProfile, machinePreset } from './machine';
import { type ModelSpec, paramCounts, parseModelConfig, trainingFlopsPerToken } from './model';
import { type SimulateOptions, simulateCluster } from './simulate';

const profile: MachineProfile = {
  name: 'test2core',
  backend: 'wasm',
  measuredAt: '2026-12-01T00:00:00.000Z',
  ranks: 2,
  matmul: {
    flopsPerSec: 20e9,
    shapes: [{ batch: 1, m: 1024, k: 128, n: 128, flopsPerSec: 20e9 }],
    reference1024: 24e9,
  },
  kernelOverhead: 20e-6,
  elementwiseBytesPerSec: { cheap: 4e9, transcendental: 1e9 },
  workload: {
    model: 'small',
    layers: 4,
    tokens: 1024,
    kernelsForward: 400,
    kernelsBackward: 800,
    elementwiseBytesForward: { cheap: 4 * 1024 * 4000, transcendental: 4 * 1024 * 1000 },
    elementwiseBytesBackward: { cheap: 4 * 1024 * 8000, transcendental: 0 },
    optimizerKernels: 600,
    optimizerBytesPerParam: { cheap: 100, transcendental: 2 },
  },
  concurrencySlowdown: 1.25,
  transport: { latency: 1e-4, bandwidth: 2e9, allReduce: [] },
};

/** The small preset of @switchyard/model, as its file is written. */
const smallPreset = JSON.parse(
  readFileSync(new URL('../../../model/src/presets/small.json', import.meta.url), 'utf8'),
) as unknown;

/** A one-layer dense-free MoE model small enough to cost by hand. */
const toy: ModelSpec = {
  name: 'toy',
  layers: 2,
  denseLayers: 0,
  hidden: 64,
  vocab: 256,
  tiedEmbeddings: true,
  attention: { kind: 'gqa', heads: 4, kvHeads: 4, headDim: 16 },
  denseIntermediate: 128,
  experts: 4,
  topK: 2,
  expertIntermediate: 32,
  sharedIntermediate: 0,
  maxNodesPerToken: 0,
  mtpDepth: 0,
};

/** A GEMM-only machine: 1 GFLOP/s, links of 1 ms and 1 GB/s. */
const plain: HardwarePreset = {
  name: 'plain',
  peakBf16: 1e9,
  peakFp8: 1e9,
  hbmBytes: 1e12,
  gpusPerNode: 2,
  nvlink: { alpha: 1e-3, beta: 1e9 },
  ib: { alpha: 1e-3, beta: 1e9 },
  wan: { alpha: 1e-3, beta: 1e9 },
};

const dataParallel = (hardware: HardwarePreset, extra: Partial<SimulateOptions> = {}): SimulateOptions => ({
  model: toy,
  cluster: { hardware, gpus: 2 },
  pp: 1,
  ep: 1,
  dp: 2,
  microBatches: 3,
  schedule: '1f1b',
  seqLen: 32,
  globalBatch: 12,
  efficiency: 1,
  dpCollective: 'all-reduce',
  ...extra,
});

describe('machine profile -> hardware preset', () => {
  it('keeps the measured rates and spreads the workload counts over layers and tokens', () => {
    const hw = machinePreset(profile);
    expect(hw.peakBf16).toBe(20e9);
    expect(hw.peakFp8).toBe(20e9);
    expect(hw.gpusPerNode).toBe(2);
    expect(hw.nvlink).toEqual({ alpha: 1e-4, beta: 2e9 });
    expect(hw.ib).toEqual(hw.nvlink);
    const host = hw.host!;
    expect(host.kernelOverhead).toBe(20e-6);
    expect(host.concurrencySlowdown).toBe(1.25);
    expect(host.kernelsPerLayer).toEqual({ forward: 100, backward: 200 });
    expect(host.optimizerKernels).toBe(600);
    // Per token per layer: 4000 cheap bytes at 4 GB/s + 1000 transcendental bytes at 1 GB/s.
    expect(host.elementwisePerTokenLayer.forward).toBeCloseTo(4000 / 4e9 + 1000 / 1e9, 18);
    expect(host.elementwisePerTokenLayer.backward).toBeCloseTo(8000 / 4e9, 18);
    expect(host.optimizerPerParam).toBeCloseTo(100 / 4e9 + 2 / 1e9, 18);
  });

  it('takes a timed optimizer update and the memory-bound slowdown when the profile has them', () => {
    const host = machinePreset({
      ...profile,
      memorySlowdown: 1.4,
      optimizerUpdate: { parameters: 2e6, seconds: 0.03 },
    }).host!;
    expect(host.memorySlowdown).toBe(1.4);
    expect(host.concurrencySlowdown).toBe(1.25);
    // The timed update holds its dispatch: no kernel term, seconds per parameter.
    expect(host.optimizerKernels).toBe(0);
    expect(host.optimizerPerParam).toBeCloseTo(0.03 / 2e6, 18);
    expect(machinePreset(profile).host!.memorySlowdown).toBeUndefined();
    expect(() => machinePreset({ ...profile, memorySlowdown: 0.9 })).toThrow(/memorySlowdown/);
    expect(() => machinePreset({ ...profile, optimizerUpdate: { parameters: 0, seconds: 1 } })).toThrow(
      /optimizerUpdate.parameters/,
    );
  });

  it('refuses a profile with a missing rate, naming the field', () => {
    const broken = { ...profile, matmul: { ...profile.matmul, flopsPerSec: 0 } };
    expect(() => machinePreset(broken)).toThrow(
      /`profile.matmul.flopsPerSec` passed to machinePreset\(\) must be a number > 0, got 0/,
    );
    expect(() => machinePreset({ ...profile, concurrencySlowdown: 0.5 })).toThrow(/concurrencySlowdown/);
  });

  it('inverts the ring all-reduce cost: latency from the small one, bandwidth from the difference', () => {
    const link = linkFromAllReduce(
      [
        { bytes: 16e6 + 8, seconds: 2e-4 + 16e6 / 2e9 },
        { bytes: 8, seconds: 2e-4 },
      ],
      2,
    );
    expect(link.alpha).toBeCloseTo(1e-4, 12);
    expect(link.beta / 2e9).toBeCloseTo(1, 9);
    // Four ranks: 6 latencies, 1.5 x the bytes.
    const four = linkFromAllReduce(
      [
        { bytes: 0, seconds: 6e-4 },
        { bytes: 8e6, seconds: 6e-4 + 1.5 * (8e6 / 1e9) },
      ],
      4,
    );
    expect(four.alpha).toBeCloseTo(1e-4, 12);
    expect(four.beta / 1e9).toBeCloseTo(1, 9);
    expect(() => linkFromAllReduce([{ bytes: 8, seconds: 1 }], 2)).toThrow(/at least two all-reduces/);
  });
});

describe('pure data parallelism (pp = 1)', () => {
  it('a step is N x (F + B) of the per-GPU micro-batch at the peak, plus one ring all-reduce of FP32 gradients', () => {
    const report = simulateCluster(dataParallel(plain));
    // 12 sequences over 3 micro-batches x 2 ranks: 2 sequences of 32 tokens per micro-batch per GPU.
    const T = 2 * 32;
    const compute = (3 * T * trainingFlopsPerToken(toy, 32)) / 1e9;
    const P = paramCounts(toy).total;
    // Two collectives (non-expert and expert parameters, each its group's ring: 2 latencies each).
    const allReduce = 4 * 1e-3 + (2 * ringBytes(4 * P, 2)) / 1e9;
    expect(report.pipelineTime).toBeCloseTo(compute, 12);
    expect(report.dpSync.time).toBeCloseTo(allReduce, 12);
    expect(report.stepTime).toBeCloseTo(compute + allReduce, 12);
    expect(report.optimizerTime).toBe(0);
    expect(report.bubble.max).toBeCloseTo(0, 12);
    expect(report.computeTerms.gemm).toBeCloseTo(compute, 12);
    expect(report.computeTerms.kernels).toBe(0);
    expect(report.simulatedRanks).toBe(1);
    // ZeRO-1 (the default) moves 6 bytes per parameter instead of 8.
    const zero1 = simulateCluster(dataParallel(plain, { dpCollective: 'zero1' }));
    expect(zero1.dpSync.time).toBeCloseTo(4 * 1e-3 + ringBytes(6 * P, 2) / 1e9, 12);
  });

  it('simulates the small preset of @switchyard/model as its file is written', () => {
    const small = parseModelConfig(smallPreset, 'small');
    expect(small).toMatchObject({ layers: 4, hidden: 128, experts: 8, topK: 2, expertIntermediate: 256 });
    expect(small.tiedEmbeddings).toBe(true);
    const report = simulateCluster({
      ...dataParallel(machinePreset(profile)),
      model: small,
      microBatches: 1,
      seqLen: 128,
      globalBatch: 8,
    });
    expect(report.stepTime).toBeGreaterThan(0);
    expect(report.tokensPerStep).toBe(8 * 128);
  });
});

describe('host costs', () => {
  it('add kernel dispatch and elementwise bytes per layer, the shared-core slowdown and the optimizer update', () => {
    const base = simulateCluster(dataParallel(plain));
    const host = {
      kernelOverhead: 10e-6,
      concurrencySlowdown: 1.5,
      kernelsPerLayer: { forward: 50, backward: 100 },
      elementwisePerTokenLayer: { forward: 200e-9, backward: 400e-9 },
      optimizerKernels: 300,
      optimizerPerParam: 40e-9,
    };
    const report = simulateCluster(dataParallel({ ...plain, host }));
    const N = 3;
    const T = 64;
    const L = toy.layers;
    const kernels = 1.5 * N * L * 150 * 10e-6;
    const elementwise = (1.5 * N * L * T * 600) / 1e9;
    expect(report.computeTerms.kernels).toBeCloseTo(kernels, 12);
    expect(report.computeTerms.elementwise).toBeCloseTo(elementwise, 12);
    expect(report.pipelineTime).toBeCloseTo(1.5 * base.pipelineTime + kernels + elementwise, 12);
    // all-reduce: every rank updates every parameter.
    const optimizer = 1.5 * (300 * 10e-6 + (paramCounts(toy).total * 40) / 1e9);
    expect(report.optimizerTime).toBeCloseTo(optimizer, 12);
    expect(report.stepTime).toBeCloseTo(report.pipelineTime + report.dpSync.time + optimizer, 12);
    // One GPU: no slowdown, no sync.
    const one = simulateCluster({
      ...dataParallel({ ...plain, host }),
      cluster: { hardware: { ...plain, host }, gpus: 1 },
      dp: 1,
      globalBatch: 6,
    });
    expect(one.computeTerms.kernels).toBeCloseTo(N * L * 150 * 10e-6, 12);
    expect(one.dpSync.time).toBe(0);
  });

  it('scales GEMMs by concurrencySlowdown and dispatch, elementwise and optimizer by memorySlowdown', () => {
    const base = simulateCluster(dataParallel(plain));
    const host = {
      kernelOverhead: 10e-6,
      concurrencySlowdown: 1.1,
      memorySlowdown: 1.6,
      kernelsPerLayer: { forward: 50, backward: 100 },
      elementwisePerTokenLayer: { forward: 200e-9, backward: 400e-9 },
      optimizerKernels: 300,
      optimizerPerParam: 40e-9,
    };
    const report = simulateCluster(dataParallel({ ...plain, host }));
    const N = 3;
    const T = 64;
    const L = toy.layers;
    const kernels = 1.6 * N * L * 150 * 10e-6;
    const elementwise = (1.6 * N * L * T * 600) / 1e9;
    expect(report.computeTerms.gemm).toBeCloseTo(1.1 * base.computeTerms.gemm, 12);
    expect(report.computeTerms.kernels).toBeCloseTo(kernels, 12);
    expect(report.computeTerms.elementwise).toBeCloseTo(elementwise, 12);
    expect(report.pipelineTime).toBeCloseTo(1.1 * base.pipelineTime + kernels + elementwise, 12);
    expect(report.optimizerTime).toBeCloseTo(1.6 * (300 * 10e-6 + (paramCounts(toy).total * 40) / 1e9), 12);
    // One GPU: neither slowdown.
    const one = simulateCluster({
      ...dataParallel({ ...plain, host }),
      cluster: { hardware: { ...plain, host }, gpus: 1 },
      dp: 1,
      globalBatch: 6,
    });
    expect(one.computeTerms.elementwise).toBeCloseTo((N * L * T * 600) / 1e9, 12);
  });

  it('leaves GPU presets unchanged: no host terms, no optimizer time', () => {
    const report = simulateCluster(dataParallel(plain));
    expect(report.computeTerms.elementwise).toBe(0);
    expect(report.optimizerTime).toBe(0);
  });
});
