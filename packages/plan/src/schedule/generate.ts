/**
 * The one entry point for pipeline schedules: a request names the kind and the sizes, the
 * dispatcher checks what every kind shares and hands the request to that kind's generator.
 *
 * Letters: P ranks, N micro-batches, S stages, v chunks per rank (interleaved 1F1B).
 * Stages per kind: S = P, except interleaved (S = vP) and DualPipeV (S = 2P).
 */
import { checkInt, invalidArgument } from '../errors';
import { dualPipe, dualPipeV } from './dualpipe';
import { DEFAULT_INTERLEAVED_CHUNKS, interleavedOneFOneB } from './interleaved';
import { checkLayers, checkSizes, gpipe, oneFOneB, oneFOneBOverlap, zbH1 } from './onef1b';
import { SCHEDULE_KINDS, type Schedule, type ScheduleKind, type ScheduleRequest } from './types';

const REQUEST_KEYS: readonly string[] = ['kind', 'ranks', 'microBatches', 'chunks', 'layers'];

/**
 * Generates the schedule a request names: per rank, the ordered ops of `request.kind` for
 * `request.ranks` ranks and `request.microBatches` micro-batches.
 *
 * When to use: whenever the kind is a setting (a config file, a CLI flag); call the kind's own
 * generator (`oneFOneB`, `dualPipe`, ...) only when the kind is fixed in code.
 *
 * Checks, for every kind: `kind` is one of {@link SCHEDULE_KINDS}; `ranks` an integer >= 2;
 * `microBatches` an integer >= 1; `chunks` given for 'interleaved' only (an integer >= 2, default
 * 2); `layers`, when given, a multiple of the stages. The kind's generator checks the rest:
 * 'interleaved' needs N % P == 0 (Megatron-LM's micro-batch groups of P), 'dualpipe' P even and
 * N even and >= 2P, 'dualpipev' N >= 2P. Throws PlanError `INVALID_ARGUMENT` naming the argument.
 *
 * @example
 * ```ts
 * const schedule = generateSchedule({ kind: '1f1b', ranks: 4, microBatches: 8 });
 * schedule.ops[0]!.length; // 16: eight forwards and eight backwards on every rank
 * generateSchedule({ kind: 'interleaved', ranks: 4, microBatches: 8, chunks: 2, layers: 30 });
 * // throws: `layers` passed to generateSchedule() must be a multiple of the stages (8), got 30
 * ```
 */
export function generateSchedule(request: ScheduleRequest): Schedule {
  checkRequest('generateSchedule', request);
  switch (request.kind) {
    case 'gpipe':
      return gpipe(request);
    case '1f1b':
      return oneFOneB(request);
    case 'interleaved':
      return interleavedOneFOneB(request);
    case 'zb-h1':
      return zbH1(request);
    case '1f1b-overlap':
      return oneFOneBOverlap(request);
    case 'dualpipe':
      return dualPipe(request);
    case 'dualpipev':
      return dualPipeV(request);
  }
}

/** The checks every kind shares: keys, kind, P, N, chunks, layers. */
function checkRequest(fn: string, request: ScheduleRequest): void {
  if (typeof request !== 'object' || request === null) {
    throw invalidArgument(
      fn,
      'request',
      'an object { kind, ranks, microBatches, chunks?, layers? }',
      request,
    );
  }
  const unknown = Object.keys(request).filter((key) => !REQUEST_KEYS.includes(key));
  if (unknown.length > 0) {
    throw invalidArgument(
      fn,
      'request',
      `an object with only the keys ${REQUEST_KEYS.join(', ')}`,
      unknown.join(', '),
    );
  }
  if (!(SCHEDULE_KINDS as readonly unknown[]).includes(request.kind)) {
    throw invalidArgument(fn, 'kind', `one of ${SCHEDULE_KINDS.join(', ')}`, request.kind);
  }
  const [P] = checkSizes(fn, request);
  const v = checkChunks(fn, request.kind, request.chunks);
  checkLayers(fn, request.layers, stagesOf(request.kind, P, v));
}

/** v for 'interleaved' (default 2); other kinds take no `chunks`. */
function checkChunks(fn: string, kind: ScheduleKind, chunks: number | undefined): number {
  if (kind === 'interleaved') return checkInt(fn, 'chunks', chunks ?? DEFAULT_INTERLEAVED_CHUNKS, 2);
  if (chunks !== undefined) {
    throw invalidArgument(fn, 'chunks', `left out for '${kind}' (only 'interleaved' takes chunks)`, chunks);
  }
  return 1;
}

/** S of a kind: P, vP for interleaved, 2P for DualPipeV. */
function stagesOf(kind: ScheduleKind, P: number, v: number): number {
  if (kind === 'interleaved') return v * P;
  if (kind === 'dualpipev') return 2 * P;
  return P;
}
