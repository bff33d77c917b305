/**
 * The files a run keeps up to date as it trains: `run.json` (what the run is and its status),
 * `metrics.jsonl` (one record per step) and `eval.jsonl` (one per evaluation). Under data
 * parallelism every rank keeps the records and only rank 0 writes.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SwitchyardError } from '@switchyard/tensor';
import type { TrainConfig } from '../config/schema';
import { appendJsonl, type EvalRecord, readJsonl, type StepRecord, truncateJsonl } from '../report/records';
import { RUN_FILES } from './outdir';

/** run.json. */
interface RunJson {
  readonly format: 'switchyard-run';
  readonly version: 1;
  readonly name: string;
  readonly description: string;
  readonly createdAt: string;
  status: 'running' | 'finished' | 'failed' | 'interrupted';
  updatedAt: string;
  error?: string;
  /** The step an interrupted run stopped after. */
  interruptedAt?: number;
  finalCheckpoint?: string;
  /** The unigram baseline's validation loss (same tokenizer and tokens), set when the run finishes. */
  unigramValLoss?: number;
  config: TrainConfig;
}

/**
 * A run's status file and records.
 *
 * When to use: by the run, from the moment its output folder is written until it finishes or fails.
 *
 * @example
 * ```ts
 * const outputs = RunOutputs.open(outDir, config, undefined, true);
 * outputs.appendStep(record);
 * outputs.finished(finalDir, unigramValLoss);
 * ```
 */
export class RunOutputs {
  /** Every step record of the run, those before a resume included. */
  readonly steps: StepRecord[];
  /** Every evaluation record of the run, those before a resume included. */
  readonly evals: EvalRecord[];
  private readonly metricsPath: string;
  private readonly evalPath: string;

  private constructor(
    private readonly outDir: string,
    private readonly run: RunJson,
    private readonly lead: boolean,
    resumedAt: number | undefined,
  ) {
    this.metricsPath = join(outDir, RUN_FILES.metrics);
    this.evalPath = join(outDir, RUN_FILES.evals);
    // From here on the output folder is written.
    if (lead) {
      if (resumedAt !== undefined) {
        truncateJsonl(this.metricsPath, resumedAt);
        truncateJsonl(this.evalPath, resumedAt);
      }
      mkdirSync(outDir, { recursive: true });
      this.writeRunJson();
    }
    this.steps =
      resumedAt !== undefined
        ? readJsonl<StepRecord>(this.metricsPath).filter((r) => r.step <= resumedAt)
        : [];
    this.evals =
      resumedAt !== undefined ? readJsonl<EvalRecord>(this.evalPath).filter((r) => r.step <= resumedAt) : [];
  }

  /**
   * Starts writing a run's folder: a new run.json, or, when resuming after step `resumedAt`, the
   * existing one marked running again with the records after that step dropped (a crash past the
   * checkpoint). Throws STATE_INVALID when a resumed run's run.json is missing or unreadable.
   */
  static open(outDir: string, config: TrainConfig, resumedAt: number | undefined, lead: boolean): RunOutputs {
    const run: RunJson =
      resumedAt !== undefined
        ? { ...withoutOutcome(readRunJson(outDir)), status: 'running', config }
        : {
            format: 'switchyard-run',
            version: 1,
            name: config.name,
            description: config.description,
            createdAt: new Date().toISOString(),
            updatedAt: '',
            status: 'running',
            config,
          };
    return new RunOutputs(outDir, run, lead, resumedAt);
  }

  /** Records one optimizer step. */
  appendStep(rec: StepRecord): void {
    if (this.lead) appendJsonl(this.metricsPath, rec);
    this.steps.push(rec);
  }

  /** Records one evaluation. */
  appendEval(rec: EvalRecord): void {
    if (this.lead) appendJsonl(this.evalPath, rec);
    this.evals.push(rec);
  }

  /** Marks the run finished, with its final checkpoint and unigram baseline. */
  finished(finalCheckpoint: string, unigramValLoss: number | undefined): void {
    this.run.status = 'finished';
    this.run.finalCheckpoint = finalCheckpoint;
    if (unigramValLoss !== undefined) this.run.unigramValLoss = unigramValLoss;
    if (this.lead) this.writeRunJson();
  }

  /** Marks the run interrupted after `step` (Ctrl-C); `--resume` continues it. */
  interrupted(step: number): void {
    this.run.status = 'interrupted';
    this.run.interruptedAt = step;
    if (this.lead) this.writeRunJson();
  }

  /** Marks the run failed with the error's message. */
  failed(e: unknown): void {
    this.run.status = 'failed';
    this.run.error = e instanceof Error ? e.message : String(e);
    if (this.lead) this.writeRunJson();
  }

  /** Replaces run.json whole (a new file renamed over it), so that other ranks never read half of it. */
  private writeRunJson(): void {
    this.run.updatedAt = new Date().toISOString();
    const path = join(this.outDir, RUN_FILES.run);
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(this.run, null, 2)}\n`);
    renameSync(tmp, path);
  }
}

/** A resumed run's run.json without the error or interruption of its previous segment. */
function withoutOutcome(run: RunJson): RunJson {
  const { error: _error, interruptedAt: _at, ...rest } = run;
  return rest;
}

function readRunJson(outDir: string): RunJson {
  const path = join(outDir, RUN_FILES.run);
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as RunJson;
  } catch (e) {
    throw new SwitchyardError('STATE_INVALID', `--resume: ${path} is missing or unreadable`, { cause: e });
  }
}
