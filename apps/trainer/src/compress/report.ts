/**
 * The report of `switchyard-train compress`: `report.json` (every number) and `report.md` (the same
 * as tables): parameters before and after, the compression ratio from the formula and from the
 * tensors, the groups and each expert's reconstruction error, and the evaluation loss per domain
 * before compression, after it, and after fine-tuning.
 */
import type { ExpertError } from '@switchyard/compress';
import { fmt } from '../report/report';

/** Mean validation loss overall and per domain. */
export interface LossSummary {
  readonly valLoss: number;
  readonly perDomainLoss: Readonly<Record<string, number>>;
}

/** Smallest, mean and largest similarity between two different experts of a layer. */
export interface SimilarityRange {
  readonly min: number;
  readonly mean: number;
  readonly max: number;
}

/** Everything `compress` measured. */
export interface CompressReport {
  readonly checkpoint: string;
  readonly compressedCheckpoint: string;
  readonly options: {
    readonly groups: number;
    readonly rank: number;
    readonly lambda: number;
    readonly equalSize: boolean;
    readonly init: 'svd' | 'scratch';
    /** Groups kept per token with two-level routing, or null. */
    readonly twoLevelGroupTopK: number | null;
    readonly calibrationBatches: number;
  };
  readonly params: {
    readonly before: number;
    readonly after: number;
    readonly expertsBefore: number;
    readonly expertsAfter: number;
  };
  readonly ratio: {
    /** K / (1 + K r (1/D + 1/F)) for the group size K, or null when group sizes differ. */
    readonly formula: number | null;
    /** Routed-expert parameters before / after, counted from the tensors. */
    readonly measured: number;
    /** Whole-model parameters before / after. */
    readonly model: number;
  };
  readonly layers: readonly {
    readonly layer: number;
    readonly groups: readonly (readonly number[])[];
    /** The similarities the groups came from (before two-level renumbering). */
    readonly similarity: { readonly structural: SimilarityRange; readonly functional?: SimilarityRange };
    /** Two-level routing: original index of each (renumbered) expert. */
    readonly originalExpert?: readonly number[];
    readonly errors: readonly ExpertError[];
  }[];
  readonly evalLoss: {
    readonly before: LossSummary;
    readonly after: LossSummary;
    readonly afterFinetune?: LossSummary;
  };
  readonly finetune?: { readonly steps: number; readonly lr: number; readonly losses: readonly number[] };
  readonly seconds: number;
}

/** report.md for a {@link CompressReport}. */
export function renderCompressReport(r: CompressReport): string {
  const o = r.options;
  const lines: string[] = [
    '# Compressed experts',
    '',
    `From \`${r.checkpoint}\` to \`${r.compressedCheckpoint}\`: ${o.groups} groups per MoE layer${o.equalSize ? ' (equal size)' : ''}, rank ${o.rank}, ` +
      `lambda ${o.lambda} (structural weight of the fused similarity), ${o.init === 'svd' ? 'SVD initialisation' : 'scratch initialisation'}` +
      `${o.twoLevelGroupTopK !== null ? `, two-level routing keeping ${o.twoLevelGroupTopK} group(s) per token` : ''}; ` +
      `${o.calibrationBatches > 0 ? `functional similarity from ${o.calibrationBatches} training micro-batches` : 'structural similarity only'}. ${fmt(r.seconds, 3)} s in all.`,
    '',
    '## Parameters',
    '',
    '| | before | after | ratio |',
    '|---|---|---|---|',
    `| routed experts | ${r.params.expertsBefore} | ${r.params.expertsAfter} | ${fmt(r.ratio.measured)}x |`,
    `| whole model | ${r.params.before} | ${r.params.after} | ${fmt(r.ratio.model)}x |`,
    '',
    r.ratio.formula !== null
      ? `The formula K / (1 + K r (1/D + 1/F)) gives ${fmt(r.ratio.formula)}x for these shapes; the tensors give ${fmt(r.ratio.measured)}x.`
      : 'Group sizes differ, so no single K applies to the formula; the tensors give the ratio above.',
    '',
    '## Evaluation loss',
    '',
  ];
  const phases: [string, LossSummary | undefined][] = [
    ['before', r.evalLoss.before],
    ['after compression', r.evalLoss.after],
    [`after fine-tuning (${r.finetune?.steps ?? 0} steps)`, r.evalLoss.afterFinetune],
  ];
  const shown = phases.filter((p): p is [string, LossSummary] => p[1] !== undefined);
  const domains = Object.keys(r.evalLoss.before.perDomainLoss);
  lines.push(`| domain | ${shown.map(([n]) => n).join(' | ')} |`);
  lines.push(`|---|${shown.map(() => '---').join('|')}|`);
  lines.push(`| **all** | ${shown.map(([, s]) => `**${fmt(s.valLoss)}**`).join(' | ')} |`);
  for (const d of domains)
    lines.push(`| ${d} | ${shown.map(([, s]) => fmt(s.perDomainLoss[d])).join(' | ')} |`);
  lines.push('', '## Reconstruction error per expert', '');
  lines.push(
    'Relative Frobenius error ||W - S_g - U V^T|| / ||W|| of each expert matrix at initialisation.',
    '',
  );
  for (const l of r.layers) {
    lines.push(`### Block ${l.layer}`, '');
    lines.push(`Groups: ${l.groups.map((g) => `{${g.join(', ')}}`).join(' ')}`, '');
    const range = (r: SimilarityRange) => `${fmt(r.min, 3)} .. ${fmt(r.max, 3)} (mean ${fmt(r.mean, 3)})`;
    lines.push(
      `Similarity between experts: structural ${range(l.similarity.structural)}${l.similarity.functional ? `, functional ${range(l.similarity.functional)}` : ''}.`,
      '',
    );
    const hasW3 = l.errors.some((e) => e.w3 !== undefined);
    lines.push(
      `| expert | ${l.originalExpert ? 'original | ' : ''}group | w1 | ${hasW3 ? 'w3 | ' : ''}w2 | all |`,
    );
    lines.push(`|---|${l.originalExpert ? '---|' : ''}---|---|${hasW3 ? '---|' : ''}---|---|`);
    for (const e of l.errors) {
      lines.push(
        `| ${e.expert} | ${l.originalExpert ? `${l.originalExpert[e.expert]} | ` : ''}${e.group} | ${fmt(e.w1)} | ${hasW3 ? `${fmt(e.w3)} | ` : ''}${fmt(e.w2)} | ${fmt(e.total)} |`,
      );
    }
    lines.push('');
  }
  return `${lines.join('\n')}\n`;
}
