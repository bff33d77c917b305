/**
 * Pipeline schedules as plain data: per rank, the ordered ops it runs. A schedule can be printed,
 * validated, simulated and drawn before anything runs, and the pipeline executor runs the same
 * object.
 *
 * Letters: P ranks (devices), N micro-batches, S model stages (in data-flow order), v chunks per
 * rank (interleaved 1F1B), F forward time, B full backward time, W weight-gradient part of B.
 *
 * The model is cut into S stages; every micro-batch flows through stage 0, 1, ..., S-1 forward and
 * back in reverse. Where a stage runs is the schedule's `placement`: `placement[phase][stage]` is the
 * rank. Most schedules have one phase. DualPipe has two: micro-batches of phase 0 enter at rank 0,
 * those of phase 1 at rank P-1 (each rank holds two copies of stages, one per direction).
 */

/** The schedules the generators make. */
export const SCHEDULE_KINDS = [
  'gpipe',
  '1f1b',
  'interleaved',
  'zb-h1',
  'dualpipe',
  'dualpipev',
  '1f1b-overlap',
] as const;

/** One of {@link SCHEDULE_KINDS}. */
export type ScheduleKind = (typeof SCHEDULE_KINDS)[number];

/**
 * What one piece of stage work computes:
 * - `F`: the forward of a micro-batch through a stage (keeps its activations);
 * - `B`: the full backward (input gradient and weight gradient; frees the activations);
 * - `Bi`: the backward for the input gradient only (frees the activations, leaves a pending W);
 * - `W`: the weight gradient left by an earlier `Bi` of the same micro-batch and stage.
 */
export type WorkKind = 'F' | 'B' | 'Bi' | 'W';

/** One micro-batch's pass (or part of it) through one model stage. */
export interface StageWork {
  readonly kind: WorkKind;
  /** Micro-batch index in [0, N), unique across phases (DualPipe: phase 0 has 0..N/2-1, phase 1 has N/2..N-1). */
  readonly microBatch: number;
  /** Model stage in [0, S). */
  readonly stage: number;
  /** Which of its rank's chunks holds the stage: 0..v-1 (interleaved), the leg 0/1 (DualPipeV), else 0. */
  readonly chunk: number;
  /** The micro-batch's phase: its direction in DualPipe (0 enters at rank 0, 1 at rank P-1), else 0. */
  readonly phase: 0 | 1;
}

/**
 * An overlapped pair: the forward of one micro-batch and the backward of another run together, so
 * that one's compute hides the other's communication (DualPipe's F&B, Megatron's combined 1F1B with
 * EP all-to-all overlap). The backward is `B` or `Bi`.
 */
export interface OverlapOp {
  readonly kind: 'F&B';
  readonly forward: StageWork & { readonly kind: 'F' };
  readonly backward: StageWork & { readonly kind: 'B' | 'Bi' };
}

/** One op in a rank's order. */
export type ScheduleOp = StageWork | OverlapOp;

/** Options every generator takes. */
export interface ScheduleRequest {
  readonly kind: ScheduleKind;
  /** P: ranks (devices). DualPipeV uses P ranks for 2P stages. */
  readonly ranks: number;
  /** N: micro-batches per optimizer step. */
  readonly microBatches: number;
  /** v: chunks (stages) per rank, interleaved 1F1B only (default 2). */
  readonly chunks?: number;
  /** Model layers, to check that the stages divide them (optional). */
  readonly layers?: number;
}

/** A generated schedule. */
export interface Schedule {
  readonly kind: ScheduleKind;
  /** P: ranks. */
  readonly ranks: number;
  /** N: micro-batches. */
  readonly microBatches: number;
  /** S: model stages. */
  readonly stages: number;
  /** Chunks (stage slots) per rank: v for interleaved, 2 for DualPipe and DualPipeV, else 1. */
  readonly chunks: number;
  /** `placement[phase][stage]`: the rank that runs that stage for micro-batches of that phase. */
  readonly placement: readonly (readonly number[])[];
  /** The phase of each micro-batch, [N]. */
  readonly phaseOf: readonly (0 | 1)[];
  /** Per rank, the ops in the order the rank runs them. */
  readonly ops: readonly (readonly ScheduleOp[])[];
}

/** A tensor that crosses ranks because consecutive stages of a micro-batch live on different ranks. */
export interface Transfer {
  /** `activation`: the output of F on `fromStage`, needed by F on `toStage`; `gradient`: the input gradient of the backward on `fromStage`, needed by the backward on `toStage`. */
  readonly kind: 'activation' | 'gradient';
  readonly microBatch: number;
  readonly phase: 0 | 1;
  readonly fromStage: number;
  readonly toStage: number;
  readonly fromRank: number;
  readonly toRank: number;
}

/** Durations for replaying a schedule (any unit; the SPEC's figures use F = 1, B = 2, W = 1, F&B = 3). */
export interface OpCosts {
  /** Forward of one stage. */
  readonly F: number;
  /** Full backward of one stage (input and weight gradients). */
  readonly B: number;
  /** Weight-gradient part of B; a `Bi` costs B - W. */
  readonly W: number;
  /** An overlapped F&B pair (default F + B). */
  readonly FB?: number;
  /** Time of one transfer between ranks (default 0). */
  readonly transfer?: number;
}
