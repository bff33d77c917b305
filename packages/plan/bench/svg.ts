/**
 * Line charts as SVG for the benchmark reports (no dependencies): log or linear axes, one polyline
 * and marker set per series, a legend. The figures in docs/public/hybridep come from here.
 */

/** One line of a chart. */
export interface Series {
  readonly name: string;
  /** [x, y] points, in x order. */
  readonly points: readonly (readonly [number, number])[];
}

/** A chart: title, axis labels, series, and which axes are logarithmic. */
export interface LineChart {
  readonly title: string;
  readonly xLabel: string;
  readonly yLabel: string;
  readonly series: readonly Series[];
  readonly logX?: boolean;
  readonly logY?: boolean;
  /** Horizontal reference lines (a paper's figure), drawn dashed with their label. */
  readonly references?: readonly { readonly y: number; readonly label: string }[];
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

/** Tick values for an axis: decades (with 2 and 5 when the range is short) or a 1-2-5 linear step. */
function ticks(min: number, max: number, log: boolean): number[] {
  if (log) {
    const out: number[] = [];
    const span = Math.log10(max / min);
    const steps = span <= 2 ? [1, 2, 5] : [1];
    for (let d = Math.floor(Math.log10(min)); d <= Math.ceil(Math.log10(max)); d++) {
      for (const s of steps) {
        const v = s * 10 ** d;
        if (v >= min * (1 - 1e-9) && v <= max * (1 + 1e-9)) out.push(v);
      }
    }
    return out;
  }
  const raw = (max - min) / 6;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step)
    out.push(Number(v.toPrecision(12)));
  return out;
}

function label(v: number): string {
  if (v === 0) return '0';
  if (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-2) return v.toExponential(0).replace('e+', 'e');
  return String(Number(v.toPrecision(3)));
}

const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** The chart as a standalone SVG document (700 x 400). */
export function lineChartSvg(chart: LineChart): string {
  const W = 700;
  const H = 400;
  const left = 64;
  const right = 220;
  const top = 36;
  const bottom = 52;
  const xs = chart.series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = [
    ...chart.series.flatMap((s) => s.points.map((p) => p[1])),
    ...(chart.references ?? []).map((r) => r.y),
  ];
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (chart.logY) {
    y0 = 10 ** Math.floor(Math.log10(y0));
    y1 = 10 ** Math.ceil(Math.log10(y1));
  } else {
    y0 = Math.min(0, y0);
    y1 = y1 * 1.05;
  }
  if (x0 === x1) x1 = x0 + 1;
  const tx = (x: number) =>
    left + (chart.logX ? Math.log(x / x0) / Math.log(x1 / x0) : (x - x0) / (x1 - x0)) * (W - left - right);
  const ty = (y: number) =>
    H -
    bottom -
    (chart.logY ? Math.log(y / y0) / Math.log(y1 / y0) : (y - y0) / (y1 - y0)) * (H - top - bottom);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<title>${escapeXml(chart.title)}</title>`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${left}" y="20" font-size="14" font-weight="bold">${escapeXml(chart.title)}</text>`,
  ];
  for (const v of ticks(x0, x1, chart.logX === true)) {
    const x = tx(v).toFixed(1);
    out.push(
      `<line x1="${x}" y1="${top}" x2="${x}" y2="${H - bottom}" stroke="#e5e5e5"/>`,
      `<text x="${x}" y="${H - bottom + 16}" text-anchor="middle">${label(v)}</text>`,
    );
  }
  for (const v of ticks(y0, y1, chart.logY === true)) {
    const y = ty(v).toFixed(1);
    out.push(
      `<line x1="${left}" y1="${y}" x2="${W - right}" y2="${y}" stroke="#e5e5e5"/>`,
      `<text x="${left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${label(v)}</text>`,
    );
  }
  out.push(
    `<rect x="${left}" y="${top}" width="${W - left - right}" height="${H - top - bottom}" fill="none" stroke="#444"/>`,
    `<text x="${(left + W - right) / 2}" y="${H - 12}" text-anchor="middle">${escapeXml(chart.xLabel)}</text>`,
    `<text transform="translate(16 ${(top + H - bottom) / 2}) rotate(-90)" text-anchor="middle">${escapeXml(chart.yLabel)}</text>`,
  );
  for (const r of chart.references ?? []) {
    const y = ty(r.y).toFixed(1);
    out.push(
      `<line x1="${left}" y1="${y}" x2="${W - right}" y2="${y}" stroke="#777" stroke-dasharray="5 4"/>`,
      `<text x="${left + 4}" y="${Number(y) - 4}" fill="#555">${escapeXml(r.label)}</text>`,
    );
  }
  chart.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]!;
    const pts = s.points.map(([x, y]) => `${tx(x).toFixed(1)},${ty(y).toFixed(1)}`);
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.join(' ')}"/>`);
    for (const p of pts) {
      const [x, y] = p.split(',');
      out.push(`<circle cx="${x}" cy="${y}" r="3" fill="${color}"/>`);
    }
    const ly = top + 10 + i * 18;
    out.push(
      `<line x1="${W - right + 12}" y1="${ly}" x2="${W - right + 32}" y2="${ly}" stroke="${color}" stroke-width="2"/>`,
      `<text x="${W - right + 38}" y="${ly}" dominant-baseline="middle">${escapeXml(s.name)}</text>`,
    );
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
