/**
 * The pipeline executor: runs a schedule object from @switchyard/plan, as is, over a model cut into
 * stages. Each rank runs its own op list in order; activations travel forward and activation
 * gradients backward between ranks as point-to-point messages (`Communicator.send`/`recv`), or stay
 * in memory when consecutive stages share a rank.
 *
 * - F records the stage's forward on the gradient tape (see `tape.ts`) and sends its activation on;
 * - B receives the activation gradient, runs the stage's whole backward, sends the input gradient
 *   back and adds the weight gradients to the step's sums;
 * - Bi runs only the input-gradient part and sends it back; the W that names the same micro-batch
 *   and stage later adds the weight gradients, from what Bi left on the tape (no recomputation);
 * - F&B runs its forward, then its backward.
 *
 * At the end of the step, a variable held by several ranks (DualPipe's two copies of every stage, an
 * embedding tied between the first and the last stage) gets the sum of its holders' gradients, the
 * same bits on each, before anyone updates it.
 *
 * Letters: P ranks of the pipeline, N micro-batches, S stages, m a micro-batch, s a stage, F forward,
 * B full backward, Bi input-gradient backward, W weight gradient, F&B an overlapped pair.
 */
import {
  isPlanError,
  partsOf,
  type Schedule,
  type ScheduleOp,
  type StageWork,
  validateSchedule,
} from '@switchyard/plan';
import {
  invalidArgument,
  isSwitchyardError,
  type Scalar,
  SwitchyardError,
  type Tensor,
  tf,
} from '@switchyard/tensor';
import type { Communicator } from '../comm/types';
import { type ForwardTape, type GradientSeed, recordForward } from './tape';

/** What the forward of one stage returns. */
export interface StageOutput {
  /** The activation handed to the next stage: required on every stage but the last. */
  readonly activation?: Tensor;
  /** The objective of the micro-batch, on the last stage only: a scalar seeded with gradient 1. */
  readonly loss?: Scalar;
  /** A scalar this stage adds to the objective (its MoE layers' balance losses), seeded with gradient 1. */
  readonly aux?: Scalar;
}

/**
 * The model side of a pipeline: every stage's variables, the shape of what enters a stage, and the
 * forward of a stage for one micro-batch.
 *
 * When to use: implement it over a model's block ranges (`embed`, `forwardBlocks`, `headLoss` of
 * @switchyard/model) and pass it to {@link PipelineExecutor}. Every rank builds it for every stage.
 */
export interface PipelineStages {
  /** The trainable variables of model stage `stage`, in a fixed order (the same on every rank). */
  variables(stage: number): readonly tf.Variable[];
  /** The shape of the activation entering `work.stage` (> 0) for `work.microBatch`. */
  inputShape(work: StageWork): readonly number[];
  /**
   * The forward of `work` (an F) from the previous stage's activation (undefined at stage 0),
   * recorded on the gradient tape. Tensors it creates and does not return are released.
   */
  forward(work: StageWork, input: Tensor | undefined): StageOutput;
}

/** One op as it ran. Times are milliseconds since {@link PipelineStepResult.startedAt}. */
export interface ExecutedOp {
  readonly op: ScheduleOp;
  /** Index of the op in `schedule.ops[rank]`. */
  readonly index: number;
  readonly start: number;
  readonly end: number;
  /** Of [start, end], the time spent waiting for an activation or a gradient from another rank. */
  readonly waitMs: number;
}

/** What {@link PipelineExecutor.run} returns. */
export interface PipelineStepResult {
  /**
   * Per variable of this rank's stages that has a gradient: the sum over the step's micro-batches
   * and over every rank holding the variable. The caller owns (and disposes) the tensors.
   */
  readonly grads: Map<tf.Variable, Tensor>;
  /** Every op of this rank, in order, with its timing. */
  readonly timeline: readonly ExecutedOp[];
  /** Wall-clock time (ms since the epoch, sub-millisecond) at which the first op started. */
  readonly startedAt: number;
  /** Milliseconds from the first op's start to the last op's end. */
  readonly opsMs: number;
  /** Milliseconds summing the gradients of variables several ranks hold. */
  readonly sharedSyncMs: number;
}

/** A forward waiting for its backward. */
interface Pending {
  readonly tape: ForwardTape;
  /** The stage input the tape was recorded from (released; its id names it on the tape). */
  readonly input: Tensor | undefined;
  readonly outputs: StageOutput;
}

type Flow = 'activation' | 'gradient';

/**
 * Runs one rank's part of a pipeline schedule, one optimizer step per {@link PipelineExecutor.run}.
 *
 * When to use: on every rank of a pipeline (with `comm` numbering the pipeline's ranks 0..P-1, e.g.
 * a `comm.group(...)` under data parallelism), once per optimizer step; then update this rank's
 * stage variables with the returned gradients.
 *
 * @example
 * ```ts
 * const schedule = generateSchedule({ kind: '1f1b', ranks: 2, microBatches: 4 });
 * const executor = new PipelineExecutor(schedule, ctx.comm, stages); // stages: a PipelineStages
 * const { grads } = executor.run();
 * optimizer.applyGradients(new Map([...grads].map(([v, g]) => [v.name, g])));
 * ```
 */
export class PipelineExecutor {
  /** This rank's index in the pipeline. */
  readonly rank: number;
  /** The stages this rank runs, ascending. */
  readonly stages: readonly number[];
  /** The variables of this rank's stages, in stage order. */
  readonly variables: readonly tf.Variable[];
  /** Stage -> the set of its variables, for the stages of this rank. */
  private readonly stageVariables = new Map<number, Set<tf.Variable>>();
  /** Every stage variable -> the pipeline ranks holding it, ascending. */
  private readonly holderRanks = new Map<tf.Variable, readonly number[]>();
  /** Variables several ranks hold, by holder set, in an order every rank shares. */
  private readonly shared: { readonly ranks: readonly number[]; readonly variables: tf.Variable[] }[] = [];
  private readonly names = new Map<tf.Variable, string>();

  constructor(
    readonly schedule: Schedule,
    private readonly comm: Communicator,
    private readonly model: PipelineStages,
  ) {
    const fn = 'PipelineExecutor';
    try {
      validateSchedule(schedule);
    } catch (e) {
      if (isPlanError(e)) throw invalidArgument(fn, 'schedule', 'a valid schedule', e.message);
      throw e;
    }
    if (comm.worldSize !== schedule.ranks) {
      throw invalidArgument(
        fn,
        'comm',
        `a communicator of the pipeline's ${schedule.ranks} ranks`,
        `one of ${comm.worldSize} ranks`,
      );
    }
    this.rank = comm.rank;
    const mine = new Set<number>();
    const holders = new Map<tf.Variable, Set<number>>();
    const order: tf.Variable[] = [];
    for (let s = 0; s < schedule.stages; s++) {
      const vars = model.variables(s);
      if (!Array.isArray(vars) || vars.some((v) => !(v instanceof tf.Variable))) {
        throw invalidArgument(fn, `stages.variables(${s})`, 'an array of tf.Variable', vars);
      }
      for (const ranksS of schedule.placement) {
        const r = ranksS[s]!;
        if (r === this.rank) mine.add(s);
        for (const v of vars) {
          if (!holders.has(v)) {
            holders.set(v, new Set());
            order.push(v);
          }
          holders.get(v)!.add(r);
        }
      }
    }
    this.stages = [...mine].sort((a, b) => a - b);
    for (const s of this.stages) this.stageVariables.set(s, new Set(model.variables(s)));
    for (const [v, set] of holders)
      this.holderRanks.set(
        v,
        [...set].sort((a, b) => a - b),
      );
    this.variables = order.filter((v) => holders.get(v)!.has(this.rank));
    const groups = new Map<string, { ranks: number[]; variables: tf.Variable[] }>();
    for (const v of this.variables) {
      const ranks = [...holders.get(v)!].sort((a, b) => a - b);
      if (ranks.length < 2) continue;
      const key = ranks.join(',');
      const g = groups.get(key) ?? { ranks, variables: [] };
      g.variables.push(v);
      groups.set(key, g);
    }
    this.shared.push(...[...groups.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, g]) => g));
    for (const s of this.stages)
      for (const v of model.variables(s)) this.names.set(v, `${v.name} (stage ${s})`);
  }

  /**
   * The pipeline ranks holding variable `v` (the ranks of the stages that list it), ascending; empty
   * for a variable of no stage.
   *
   * When to use: to count a shared variable once (in a gradient norm), or to pick the rank that
   * broadcasts it.
   */
  holders(v: tf.Variable): readonly number[] {
    return this.holderRanks.get(v) ?? [];
  }

  /**
   * Runs this rank's ops of one optimizer step in the schedule's order and returns the summed
   * weight gradients. Fails with the transport's TIMEOUT or RANK_FAILED, naming the stage and rank it
   * waited for, when a peer stalls or dies; everything the step held is then released.
   */
  run(): PipelineStepResult {
    const step = new StepRun(this);
    try {
      return step.run();
    } catch (e) {
      step.dispose();
      throw e;
    }
  }

  /** @internal */
  get parts(): {
    readonly comm: Communicator;
    readonly model: PipelineStages;
    readonly stageVariables: ReadonlyMap<number, ReadonlySet<tf.Variable>>;
    readonly shared: readonly { readonly ranks: readonly number[]; readonly variables: tf.Variable[] }[];
    readonly names: ReadonlyMap<tf.Variable, string>;
  } {
    return {
      comm: this.comm,
      model: this.model,
      stageVariables: this.stageVariables,
      shared: this.shared,
      names: this.names,
    };
  }
}

/** The state of one step: forwards waiting for their backward, tensors between co-located stages, sums. */
class StepRun {
  private readonly pending = new Map<string, Pending>();
  /** Tensors handed between stages on this rank, by flow and destination. */
  private readonly local = new Map<string, Tensor>();
  private readonly grads = new Map<tf.Variable, Tensor>();
  private readonly schedule: Schedule;
  private readonly S: number;
  private readonly N: number;
  private waitMs = 0;

  constructor(private readonly ex: PipelineExecutor) {
    this.schedule = ex.schedule;
    this.S = ex.schedule.stages;
    this.N = ex.schedule.microBatches;
  }

  run(): PipelineStepResult {
    const { comm } = this.ex.parts;
    const ops = this.schedule.ops[this.ex.rank]!;
    const startedAt = performance.timeOrigin + performance.now();
    const t0 = performance.now();
    const timeline: ExecutedOp[] = [];
    ops.forEach((op, index) => {
      const start = performance.now() - t0;
      this.waitMs = 0;
      for (const part of partsOf(op)) this.runWork(part);
      timeline.push({ op, index, start, end: performance.now() - t0, waitMs: this.waitMs });
    });
    const opsMs = performance.now() - t0;
    if (this.pending.size > 0 || this.local.size > 0) {
      throw new SwitchyardError(
        'STATE_INVALID',
        `pipeline rank ${comm.rank} ended the step with ${this.pending.size} forwards without a backward and ${this.local.size} undelivered tensors`,
      );
    }
    const t1 = performance.now();
    this.sumShared();
    const sharedSyncMs = performance.now() - t1;
    const grads = new Map(this.grads);
    this.grads.clear();
    return { grads, timeline, startedAt, opsMs, sharedSyncMs };
  }

  dispose(): void {
    for (const p of this.pending.values()) p.tape.dispose();
    this.pending.clear();
    tf.dispose([...this.local.values(), ...this.grads.values()]);
    this.local.clear();
    this.grads.clear();
  }

  private runWork(w: StageWork): void {
    if (w.kind === 'F') this.forward(w);
    else if (w.kind === 'W') this.weights(w);
    else this.backward(w);
  }

  private forward(w: StageWork): void {
    const { model } = this.ex.parts;
    const last = w.stage === this.S - 1;
    const input = w.stage > 0 ? this.take('activation', w) : undefined;
    let recorded: { result: StageOutput; tape: ForwardTape };
    try {
      recorded = recordForward(() => model.forward(w, input));
    } catch (e) {
      input?.dispose();
      throw e;
    }
    const { result: out, tape } = recorded;
    const bad = checkOutputs(out, last);
    const release = () => {
      for (const t of [out?.activation, out?.loss, out?.aux, input]) if (t instanceof tf.Tensor) t.dispose();
    };
    if (bad !== undefined) {
      tape.dispose();
      release();
      throw new SwitchyardError(
        'STATE_INVALID',
        `the forward of stage ${w.stage} (micro-batch ${w.microBatch}) must return ${bad}`,
      );
    }
    this.pending.set(cell(w), { tape, input, outputs: out });
    if (!last) this.deliver('activation', w, out.activation!);
    // The tape holds what the backward needs; the outputs stay only as names of tape entries.
    release();
  }

  private backward(w: StageWork): void {
    const p = this.pending.get(cell(w));
    if (p === undefined) throw this.missing(w, 'F');
    const last = w.stage === this.S - 1;
    const seeds: GradientSeed[] = [];
    const made: Tensor[] = [];
    try {
      if (last) seeds.push({ output: p.outputs.loss!, dy: keepMade(made, tf.ones([])) });
      else seeds.push({ output: p.outputs.activation!, dy: keepMade(made, this.take('gradient', w)) });
      if (p.outputs.aux !== undefined) seeds.push({ output: p.outputs.aux, dy: keepMade(made, tf.ones([])) });
      const inputs = p.input === undefined ? [] : [p.input];
      let dx: Tensor | undefined;
      if (w.kind === 'B') {
        const { inputGrads, weightGrads } = p.tape.backward(seeds, inputs);
        this.pending.delete(cell(w));
        dx = inputGrads[0];
        this.accumulate(w, weightGrads);
      } else {
        [dx] = p.tape.backwardInputs(seeds, inputs);
      }
      if (w.stage > 0) {
        const g = dx ?? tf.zeros([...this.ex.parts.model.inputShape(w)]);
        this.deliver('gradient', w, g);
        g.dispose();
      }
    } finally {
      tf.dispose(made);
    }
  }

  private weights(w: StageWork): void {
    const p = this.pending.get(cell(w));
    if (p === undefined || p.tape.state !== 'input-done') throw this.missing(w, 'Bi');
    const weightGrads = p.tape.backwardWeights();
    this.pending.delete(cell(w));
    this.accumulate(w, weightGrads);
  }

  /** Adds one backward's weight gradients to the step's sums (all of them: they are ours to release). */
  private accumulate(w: StageWork, weightGrads: Map<tf.Variable, Tensor>): void {
    const { stageVariables, names } = this.ex.parts;
    const own = stageVariables.get(w.stage)!;
    const stray = [...weightGrads.keys()].find((v) => !own.has(v));
    if (stray !== undefined) {
      tf.dispose([...weightGrads.values()]);
      throw new SwitchyardError(
        'STATE_INVALID',
        `the forward of stage ${w.stage} read variable ${names.get(stray) ?? stray.name}, which stages.variables(${w.stage}) does not list`,
      );
    }
    for (const [v, g] of weightGrads) {
      const cur = this.grads.get(v);
      if (cur === undefined) this.grads.set(v, g);
      else {
        this.grads.set(v, tf.add(cur, g));
        tf.dispose([cur, g]);
      }
    }
  }

  /** Sums the gradients of variables several ranks hold, one all-reduce per holder set. */
  private sumShared(): void {
    const { comm, shared } = this.ex.parts;
    for (const { ranks, variables } of shared) {
      const total = variables.reduce((n, v) => n + v.size, 0);
      const flat = new Float32Array(total);
      let off = 0;
      for (const v of variables) {
        const g = this.grads.get(v);
        if (g !== undefined) flat.set(g.dataSync() as Float32Array, off);
        off += v.size;
      }
      comm.group(ranks).allReduce(flat, 'sum', { inPlace: true });
      off = 0;
      for (const v of variables) {
        this.grads.get(v)?.dispose();
        this.grads.set(v, tf.tensor(flat.subarray(off, off + v.size), v.shape, 'float32'));
        off += v.size;
      }
    }
  }

  /** Sends `t` to the rank of the stage it flows to, or keeps it here when that stage is ours. */
  private deliver(flow: Flow, w: StageWork, t: Tensor): void {
    const to = flow === 'activation' ? w.stage + 1 : w.stage - 1;
    const dst = this.schedule.placement[w.phase]![to]!;
    if (dst === this.ex.rank) {
      this.local.set(`${flow}:${w.phase}:${w.microBatch}:${to}`, tf.keep(tf.clone(t)));
      return;
    }
    this.ex.parts.comm.send(
      dst,
      t.dataSync() as Float32Array,
      this.tag(flow, w.phase, w.microBatch, w.stage),
    );
  }

  /** The activation (for an F) or activation gradient (for a backward) `w` needs. */
  private take(flow: Flow, w: StageWork): Tensor {
    const from = flow === 'activation' ? w.stage - 1 : w.stage + 1;
    const { comm, model } = this.ex.parts;
    const src = this.schedule.placement[w.phase]![from]!;
    const shape = [...model.inputShape(flow === 'activation' ? w : { ...w, stage: w.stage + 1 })];
    if (src === this.ex.rank) {
      const key = `${flow}:${w.phase}:${w.microBatch}:${w.stage}`;
      const t = this.local.get(key);
      if (t === undefined) throw this.missing(w, flow === 'activation' ? 'F' : 'B');
      this.local.delete(key);
      return t;
    }
    const t0 = performance.now();
    let buf: Float32Array;
    try {
      buf = comm.recv<Float32Array>(src, this.tag(flow, w.phase, w.microBatch, from));
    } catch (e) {
      if (!isSwitchyardError(e)) throw e;
      throw new SwitchyardError(
        e.code,
        `pipeline rank ${this.ex.rank}: ${opName(w)} needs the ${flow} of micro-batch ${w.microBatch} from stage ${from} on rank ${src}, which did not come: ${e.message}`,
        { cause: e, details: { ...e.details, stage: from, stageRank: src, microBatch: w.microBatch } },
      );
    } finally {
      this.waitMs += performance.now() - t0;
    }
    const size = shape.reduce((a, b) => a * b, 1);
    if (buf.length !== size || !(buf instanceof Float32Array)) {
      throw new SwitchyardError(
        'SHAPE_MISMATCH',
        `pipeline rank ${this.ex.rank}: the ${flow} of micro-batch ${w.microBatch} from stage ${from} has ${buf.length} values, expected [${shape.join(', ')}]`,
      );
    }
    return tf.tensor(buf, shape, 'float32');
  }

  /** A message tag unique within a step for (flow, phase, sending stage, micro-batch). */
  private tag(flow: Flow, phase: number, microBatch: number, fromStage: number): number {
    return (((flow === 'activation' ? 0 : 1) * 2 + phase) * this.S + fromStage) * this.N + microBatch;
  }

  private missing(w: StageWork, before: string): SwitchyardError {
    return new SwitchyardError(
      'STATE_INVALID',
      `pipeline rank ${this.ex.rank}: ${opName(w)} came before the ${before} it needs`,
    );
  }
}

/** What is wrong with a stage's outputs, or undefined. */
function checkOutputs(out: StageOutput, last: boolean): string | undefined {
  const isScalar = (t: unknown) => t instanceof tf.Tensor && t.rank === 0 && t.dtype === 'float32';
  if (out === null || typeof out !== 'object') return 'an object { activation?, loss?, aux? }';
  if (out.aux !== undefined && !isScalar(out.aux)) return 'a float32 scalar as `aux`';
  if (last) {
    if (!isScalar(out.loss)) return 'a float32 scalar `loss` (it is the last stage)';
    if (out.activation !== undefined) return 'no `activation` (it is the last stage)';
    return undefined;
  }
  if (!(out.activation instanceof tf.Tensor) || out.activation.dtype !== 'float32')
    return 'a float32 `activation` for the next stage';
  if (out.loss !== undefined) return 'no `loss` (only the last stage has one)';
  return undefined;
}

/** "F of micro-batch 3 on stage 1". */
function opName(w: StageWork): string {
  return `${w.kind} of micro-batch ${w.microBatch} on stage ${w.stage}`;
}

function cell(w: StageWork): string {
  return `${w.phase}:${w.microBatch}:${w.stage}`;
}

function keepMade(made: Tensor[], t: Tensor): Tensor {
  made.push(t);
  return t;
}
