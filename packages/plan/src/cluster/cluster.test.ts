import { describe, expect, it } from 'vitest';
import { isPlanError } from '../errors';
import { generateSchedule } from '../schedule/generate';
import { validateSchedule } from '../schedule/validate';
import { a2aTime, expertA2aVolume, flatA2aBytes, ringBytes } from './comm';
import { HARDWARE_PRESETS, linkTime, parseCluster } from './hardware';
import {
  DEEPSEEK_V3,
  layerFlops,
  MIXTRAL_8X7B,
  modelPreset,
  paramCounts,
  parseModelConfig,
  trainingFlopsPerToken,
} from './model';
import { replayPipeline } from './pipeline';
import { type SimulateOptions, simulateCluster } from './simulate';
import { runStreams, type StreamTask } from './streams';

const dsv3: SimulateOptions = {
  model: DEEPSEEK_V3,
  cluster: parseCluster('h800x2048'),
  pp: 16,
  ep: 64,
  dp: 2,
  microBatches: 120,
  schedule: 'dualpipe',
  globalBatch: 15360,
  precision: 'fp8',
};

describe('model cost', () => {
  it('DeepSeek-V3 has ~671B parameters, ~37B activated (paper: 671B / 37B)', () => {
    const { total, active } = paramCounts(DEEPSEEK_V3);
    expect(total / 1e9).toBeCloseTo(671, 0);
    expect(active / 1e9).toBeGreaterThan(36.5);
    expect(active / 1e9).toBeLessThan(38);
  });

  it('Mixtral 8x7B has ~46.7B parameters, ~12.9B activated (Mistral: 46.7B / 12.9B)', () => {
    const { total, active } = paramCounts(MIXTRAL_8X7B);
    expect(total / 1e9).toBeCloseTo(46.7, 1);
    expect(active / 1e9).toBeCloseTo(12.9, 1);
  });

  it('counts MLA projections by hand and causal attention as 2·H·(dqk+dv)·S/2', () => {
    const f = layerFlops(DEEPSEEK_V3, true, 4096);
    const mla = 7168 * 1536 + 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 + 512 * 128 * 256 + 128 * 128 * 7168;
    expect(f.attnLinear).toBe(2 * mla);
    expect(f.core).toBe(2 * 128 * (192 + 128) * 2048);
    expect(f.experts).toBe(2 * 8 * 3 * 7168 * 2048);
    expect(f.mlp).toBe(2 * 3 * 7168 * 2048);
    // 6 x activated params plus attention and MTP: ~2.6e11 per token at 4k.
    expect(trainingFlopsPerToken(DEEPSEEK_V3, 4096) / 1e9).toBeGreaterThan(240);
    expect(trainingFlopsPerToken(DEEPSEEK_V3, 4096) / 1e9).toBeLessThan(270);
  });

  it('reads a Hugging Face DeepSeek-V3 config.json as the preset', () => {
    const hf = {
      model_type: 'deepseek_v3',
      hidden_size: 7168,
      num_hidden_layers: 61,
      first_k_dense_replace: 3,
      vocab_size: 129280,
      num_attention_heads: 128,
      q_lora_rank: 1536,
      kv_lora_rank: 512,
      qk_nope_head_dim: 128,
      qk_rope_head_dim: 64,
      v_head_dim: 128,
      intermediate_size: 18432,
      moe_intermediate_size: 2048,
      n_routed_experts: 256,
      n_shared_experts: 1,
      num_experts_per_tok: 8,
      n_group: 8,
      topk_group: 4,
      num_nextn_predict_layers: 1,
    };
    expect(parseModelConfig(hf, 'deepseek-v3')).toEqual(DEEPSEEK_V3);
  });

  it('reads qwen2_moe and Switchyard configs; rejects unknown ones with the key named', () => {
    const qwen = parseModelConfig({
      model_type: 'qwen2_moe',
      hidden_size: 2048,
      num_hidden_layers: 24,
      num_attention_heads: 16,
      num_key_value_heads: 16,
      intermediate_size: 5632,
      moe_intermediate_size: 1408,
      shared_expert_intermediate_size: 5632,
      num_experts: 60,
      num_experts_per_tok: 4,
      vocab_size: 151936,
    });
    // Qwen1.5-MoE-A2.7B: 14.3B total, 2.7B activated.
    expect(paramCounts(qwen).total / 1e9).toBeCloseTo(14.3, 0);
    expect(paramCounts(qwen).active / 1e9).toBeCloseTo(2.7, 0);
    const sw = parseModelConfig({
      vocabSize: 4096,
      dModel: 128,
      numLayers: 4,
      numHeads: 4,
      numKvHeads: 2,
      dFF: 512,
      moe: { every: 1, firstDense: 0, router: { type: 'topk', k: 2 }, experts: { numExperts: 8, dFF: 256 } },
    });
    expect(sw.experts).toBe(8);
    expect(sw.topK).toBe(2);
    expect(() => parseModelConfig({ model_type: 'llama' })).toThrow(
      /`config.model_type` passed to parseModelConfig\(\)/,
    );
    expect(() => modelPreset('gpt-5')).toThrow(/deepseek-v3, mixtral-8x7b/);
  });
});

describe('links and collectives', () => {
  it('alpha-beta: t = alpha + bytes / beta', () => {
    expect(linkTime({ alpha: 10e-6, beta: 50e9 }, 50e6)).toBeCloseTo(1e-3 + 10e-6, 12);
    expect(linkTime(HARDWARE_PRESETS.h800.nvlink, 0)).toBe(0);
    expect(ringBytes(1000, 4)).toBe(750);
  });

  it("flat EP is the SPEC's T·D·s·(G-1)·(1-(1-1/G)^K)", () => {
    expect(flatA2aBytes(4096, 7168, 2, 8, 8)).toBeCloseTo(4096 * 7168 * 2 * 7 * (1 - (7 / 8) ** 8), 3);
    // One node: the hierarchical volume is the flat one over NVLink.
    const v = expertA2aVolume({
      tokens: 4096,
      hidden: 7168,
      bytesPerElement: 2,
      ep: 8,
      gpusPerNode: 8,
      topK: 8,
      maxNodesPerToken: 0,
    });
    expect(v.ib).toBe(0);
    expect(v.nvlink).toBeCloseTo(flatA2aBytes(4096, 7168, 2, 8, 8), 3);
  });

  it('node-limited routing bounds the IB copies per token by M: DeepSeek-V3 ~3.15 remote nodes', () => {
    const shape = { tokens: 1, hidden: 1, bytesPerElement: 1, ep: 64, gpusPerNode: 8, topK: 8 };
    const limited = expertA2aVolume({ ...shape, maxNodesPerToken: 4 });
    expect(limited.ib).toBeCloseTo(4 * (1 - 0.75 ** 8) * (7 / 8), 12);
    expect(limited.ib).toBeLessThanOrEqual(4);
    const free = expertA2aVolume({ ...shape, maxNodesPerToken: 0 });
    expect(free.ib).toBeCloseTo(8 * (1 - (7 / 8) ** 8) * (7 / 8), 12);
    expect(free.ib).toBeGreaterThan(limited.ib);
    // Hierarchical time: the slower tier plus alpha.
    expect(a2aTime({ nvlink: 160e6, ib: 50e6 }, HARDWARE_PRESETS.h800)).toBeCloseTo(1e-3 + 10e-6, 12);
  });
});

describe('streams and pipeline', () => {
  it('an overlapped pair costs max(compute, comm) per layer, not the sum', () => {
    // Per layer: compute 1 then comm 1 (F), and comm 1 then compute 1 (B); 4 layers each.
    const tasks: StreamTask[] = [];
    for (const [tag, first] of [
      ['F', 'compute'],
      ['B', 'comm'],
    ] as const) {
      let prev = -1;
      for (let l = 0; l < 4; l++) {
        const second = first === 'compute' ? 'comm' : 'compute';
        tasks.push({ stream: first, duration: 1, deps: prev < 0 ? [] : [prev], label: `${tag}${l}a` });
        tasks.push({ stream: second, duration: 1, deps: [tasks.length - 1], label: `${tag}${l}b` });
        prev = tasks.length - 1;
      }
    }
    const run = runStreams(tasks);
    expect(run.compute).toBe(8);
    expect(run.comm).toBe(8);
    expect(run.makespan).toBeLessThanOrEqual(9); // ~ max(8, 8) + one layer of fill, not 16
    // In the simulator: a DeepSeek-V3 MoE layer's F&B pair.
    const moe = simulateCluster(dsv3).layers.find((l) => l.kind === 'moe')!;
    const compute = moe.forwardCompute + moe.backwardCompute;
    const comm = moe.forwardComm + moe.backwardComm;
    expect(moe.overlappedPair).toBeLessThan(compute + comm);
    expect(moe.overlappedPair).toBeGreaterThanOrEqual(Math.max(compute, comm) - 1e-12);
    expect(moe.overlappedPair).toBeLessThan(Math.max(compute, comm) * 1.1);
    // Serial: the shared expert still runs beside the dispatch, the rest adds up.
    expect(moe.serialPair).toBeLessThanOrEqual(compute + comm + 1e-12);
    expect(moe.serialPair).toBeGreaterThan(moe.overlappedPair * 1.2);
  });

  it('replayPipeline with one duration per op kind gives validateSchedule makespan', () => {
    for (const kind of ['1f1b', 'zb-h1', 'dualpipe', 'interleaved'] as const) {
      const s = generateSchedule({ kind, ranks: 4, microBatches: 8 });
      const c = { F: 1.3, B: 2.1, W: 0.7, FB: 2.9, transfer: 0.05 };
      const dur = (op: Parameters<Parameters<typeof replayPipeline>[1]>[0]) =>
        op.kind === 'F&B'
          ? op.backward.kind === 'Bi'
            ? c.FB - c.W
            : c.FB
          : op.kind === 'Bi'
            ? c.B - c.W
            : c[op.kind];
      const t = replayPipeline(s, dur, c.transfer);
      const makespan = Math.max(...t.map((r) => r.at(-1)!.end));
      expect(makespan).toBeCloseTo(validateSchedule(s, c).makespan, 9);
    }
  });
});

describe('simulateCluster', () => {
  it('DeepSeek-V3 on 2048 H800: DualPipe beats 1F1B and ZB-H1; overlap hides most all-to-all', () => {
    const dual = simulateCluster(dsv3);
    const one = simulateCluster({ ...dsv3, schedule: '1f1b' });
    const zb = simulateCluster({ ...dsv3, schedule: 'zb-h1' });
    const serial = simulateCluster({ ...dsv3, overlap: false });
    expect(dual.simulatedRanks).toBe(16);
    expect(dual.stepTime).toBeLessThan(zb.stepTime);
    expect(zb.stepTime).toBeLessThan(one.stepTime);
    expect(dual.exposedComm.epA2a).toBeLessThan(serial.exposedComm.epA2a / 2);
    expect(dual.memory.every((m) => m.peakActivations === 17)).toBe(true); // P + 1
    expect(dual.stages.reduce((a, s) => a + s.layers, 0)).toBe(61);
    // GPU-hours per trillion tokens: same order as the paper's 180K (see the report for the inputs).
    expect(dual.gpuHoursPerTrillionTokens).toBeGreaterThan(90e3);
    expect(dual.gpuHoursPerTrillionTokens).toBeLessThan(250e3);
    expect(dual.bytesPerGpu.ib).toBeGreaterThan(0);
  });

  it('rejects bad layouts with PlanErrors naming the argument and the constraint', () => {
    const bad = (patch: Partial<SimulateOptions>) => () => simulateCluster({ ...dsv3, ...patch });
    expect(bad({ dp: 4 })).toThrow(
      /`pp \* ep \* dp` passed to simulateCluster\(\) must be equal to the cluster's 2048 GPUs, got "16 \* 64 \* 4 = 4096"/,
    );
    expect(bad({ ep: 48, dp: 1, cluster: parseCluster('h800x768') })).toThrow(
      /`ep` .* divisor of the model's 256 routed experts/,
    );
    expect(bad({ model: { ...DEEPSEEK_V3, layers: 12, denseLayers: 0 }, pp: 16 })).toThrow(
      /`pp` .* at most one stage per layer \(12 layers\)/,
    );
    expect(bad({ globalBatch: 1000 })).toThrow(
      /`globalBatch` .* multiple of microBatches \* ep \* dp = 15360/,
    );
    expect(bad({ efficiency: 1.5 })).toThrow(/`efficiency`/);
    expect(bad({ microBatches: 30, globalBatch: 3840 })).toThrow(/microBatches|micro/);
    expect(() => parseCluster('tpu-v5x64')).toThrow(/`cluster` passed to parseCluster\(\)/);
    try {
      bad({ dp: 4 })();
    } catch (e) {
      expect(isPlanError(e)).toBe(true);
    }
  });
});
