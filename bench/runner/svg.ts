/**
 * Two small SVG chart kinds for the HTML report, drawn by hand (no library, no script): a line
 * plot over categorical x values (request rates) and an empirical CDF. Output is a standalone
 * `<svg>` string; every text is escaped.
 */

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

export interface LineSeries {
  name: string;
  color: string;
  isDashed?: boolean;
  /** One value per category; null leaves a gap. */
  values: (number | null)[];
}

export interface CdfSeries {
  name: string;
  color: string;
  values: number[];
}

const W = 640;
const H = 320;
const M = { left: 64, right: 210, top: 34, bottom: 46 };
const PW = W - M.left - M.right;
const PH = H - M.top - M.bottom;

export const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** About `n` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  const first = Math.floor(lo / step);
  const last = Math.ceil(hi / step - 1e-9);
  for (let k = first; k <= last; k++) out.push(+(k * step).toPrecision(12));
  return out;
}

const tickLabel = (v: number) => (Math.abs(v) >= 1000 ? `${+(v / 1000).toPrecision(3)}k` : String(+v.toPrecision(4)));

function frame(title: string, xLabel: string, yLabel: string, yTicks: number[], yOf: (v: number) => number, body: string, legend: string): string {
  const grid = yTicks
    .map((t) => `<line x1="${M.left}" x2="${M.left + PW}" y1="${yOf(t)}" y2="${yOf(t)}" stroke="#e5e5e5"/><text x="${M.left - 6}" y="${yOf(t) + 4}" text-anchor="end">${tickLabel(t)}</text>`)
    .join('');
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" font-family="sans-serif" font-size="11">` +
    `<text x="${W / 2 - M.right / 2 + M.left / 2}" y="18" text-anchor="middle" font-size="13" font-weight="bold">${esc(title)}</text>` +
    grid +
    `<rect x="${M.left}" y="${M.top}" width="${PW}" height="${PH}" fill="none" stroke="#888"/>` +
    body +
    `<text x="${M.left + PW / 2}" y="${H - 8}" text-anchor="middle">${esc(xLabel)}</text>` +
    `<text transform="translate(14 ${M.top + PH / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>` +
    legend +
    '</svg>'
  );
}

function legendOf(items: { name: string; color: string; isDashed?: boolean }[]): string {
  return items
    .map((s, i) => {
      const y = M.top + 8 + i * 16;
      const x = M.left + PW + 10;
      return `<line x1="${x}" x2="${x + 22}" y1="${y}" y2="${y}" stroke="${s.color}" stroke-width="2"${s.isDashed ? ' stroke-dasharray="5 3"' : ''}/><text x="${x + 28}" y="${y + 4}">${esc(s.name)}</text>`;
    })
    .join('');
}

/** Lines over categories (e.g. request rates), y from 0 to the largest value. */
export function linePlot(o: { title: string; xLabel: string; yLabel: string; categories: string[]; series: LineSeries[] }): string {
  const all = o.series.flatMap((s) => s.values).filter((v): v is number => v !== null && Number.isFinite(v));
  const yTicks = niceTicks(0, Math.max(0, ...all) || 1);
  const yMax = yTicks[yTicks.length - 1];
  const yOf = (v: number) => +(M.top + PH - (v / yMax) * PH).toFixed(2);
  const n = o.categories.length;
  const xOf = (i: number) => +(M.left + (n === 1 ? PW / 2 : 20 + (i * (PW - 40)) / (n - 1))).toFixed(2);
  let body = o.categories.map((c, i) => `<text x="${xOf(i)}" y="${M.top + PH + 16}" text-anchor="middle">${esc(c)}</text>`).join('');
  for (const s of o.series) {
    const pts = s.values.map((v, i) => (v !== null && Number.isFinite(v) ? `${xOf(i)},${yOf(v)}` : null));
    const segments: string[][] = [[]];
    for (const p of pts) p ? segments[segments.length - 1].push(p) : segments.push([]);
    for (const seg of segments.filter((x) => x.length > 0)) {
      body += `<polyline points="${seg.join(' ')}" fill="none" stroke="${s.color}" stroke-width="2"${s.isDashed ? ' stroke-dasharray="5 3"' : ''}/>`;
    }
    body += pts
      .filter((p): p is string => p !== null)
      .map((p) => `<circle cx="${p.split(',')[0]}" cy="${p.split(',')[1]}" r="3" fill="${s.color}"/>`)
      .join('');
  }
  return frame(o.title, o.xLabel, o.yLabel, yTicks, yOf, body, legendOf(o.series));
}

/** Empirical CDFs (step functions), x from 0 to the largest value. */
export function cdfPlot(o: { title: string; xLabel: string; series: CdfSeries[] }): string {
  const all = o.series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const xTicks = niceTicks(0, Math.max(0, ...all) || 1);
  const xMax = xTicks[xTicks.length - 1];
  const xOf = (v: number) => +(M.left + (v / xMax) * PW).toFixed(2);
  const yOf = (p: number) => +(M.top + PH - p * PH).toFixed(2);
  let body = xTicks.map((t) => `<text x="${xOf(t)}" y="${M.top + PH + 16}" text-anchor="middle">${tickLabel(t)}</text>`).join('');
  for (const s of o.series) {
    const v = s.values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
    if (v.length === 0) continue;
    let d = `M${xOf(0)},${yOf(0)} H${xOf(v[0])}`;
    v.forEach((x, i) => (d += ` H${xOf(x)} V${yOf((i + 1) / v.length)}`));
    body += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`;
  }
  return frame(o.title, o.xLabel, 'fraction of requests', [0, 0.25, 0.5, 0.75, 1], yOf, body, legendOf(o.series));
}
