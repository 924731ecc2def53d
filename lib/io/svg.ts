// Hand-written SVG charts (benchmark plots, `sppnet ablation`), with no plotting dependency.
// Internal: used by bin/sppnet.js and bench/, not exported from the package index.
//
//   const svg = require('../dist/io/svg');
//   svg.lineChart({ title, xTitle, yTitle, logX, logY, series: [{ name, points: [[x, y], ...] }] })
//   svg.barChart({ title, yTitle, logY, categories: ['W1', ...], series: [{ name, values: [y | null, ...] }] })
//   svg.combine([chartA, chartB], { cols: 2 })   // several charts in one SVG document
//   svg.write('bench/out/x.svg', text)
//
// Each chart function returns a complete SVG document (a string). Options common to both:
// width, height (px; default 600 x 380), title, subtitle, notes (lines under the plot),
// yMin / yMax (else from the data), yFormat (tick label function), colors.
// Line charts: xTicks (explicit tick positions; default: the data's x values on a log axis with
// few distinct values, else "nice" ticks), xMin / xMax, showValues (label each point; a series'
// own showValues overrides it), a series' markers: false (no dots: dense lines).
// Bar charts: showValues (default true: each bar's value above it; null values read "n/a").

import * as fs from 'fs';
import * as path from 'path';

// Okabe-Ito: distinguishable with the common colour-vision deficiencies.
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];
const DASHES = ['', '6 3', '2 3', '8 3 2 3', '4 4', '1 2'];
const FONT = 'DejaVu Sans, Helvetica, Arial, sans-serif';

/** Options both chart kinds take. */
export interface ChartOptions {
  width?: number;
  height?: number;
  title?: string;
  subtitle?: string | string[];
  notes?: string | string[];
  xTitle?: string;
  yTitle?: string;
  logY?: boolean;
  yMin?: number;
  yMax?: number;
  yFormat?: (v: number) => string;
  valueFormat?: (v: number) => string;
  colors?: string[];
}

export interface LineSeries {
  name: string;
  points: Array<[number, number]>;
  color?: string;
  dash?: string;
  markers?: boolean;
  showValues?: boolean;
}

export interface LineChartOptions extends ChartOptions {
  series: LineSeries[];
  logX?: boolean;
  xTicks?: number[];
  xMin?: number;
  xMax?: number;
  xFormat?: (v: number) => string;
  showValues?: boolean;
}

export interface BarSeries {
  name: string;
  values: Array<number | null | undefined>;
  color?: string;
}

export interface BarChartOptions extends ChartOptions {
  series: BarSeries[];
  categories: string[];
  categoryNotes?: Array<string | null | undefined>;
  showValues?: boolean;
}

export interface CombineOptions {
  cols?: number;
  title?: string;
  notes?: string | string[];
}

/** Tick positions and the axis range they cover. */
export interface Ticks {
  ticks: number[];
  lo: number;
  hi: number;
}

interface TextOptions {
  size?: number;
  anchor?: string;
  weight?: string;
  fill?: string;
  rotate?: number;
  baseline?: string;
}

interface Box {
  x0: number;
  x1: number;
  y0: number;
  y1: number;
}

interface Axis {
  ticks: number[];
  map: (v: number) => number;
}

/** What axes() reads: a line chart's options or a bar chart's. */
type AxesOptions = ChartOptions & { logX?: boolean; xFormat?: (v: number) => string };

const esc = (s: unknown): string => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const r2 = (v: number): number => Math.round(v * 100) / 100;

/** A short label for a number: 3 significant digits, thousands as 12k, tiny values in e-notation. */
export function fmt(v: number | null | undefined): string {
  if (v == null || !Number.isFinite(v)) return 'n/a';
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 0.01) return String(+v.toPrecision(3));
  return v.toExponential(1);
}

/** "Nice" linear ticks (steps of 1, 2, 2.5 or 5 x 10^k) covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 6): Ticks {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  // From the last tick at or below lo to the first at or above hi, so the data fit inside.
  for (let t = Math.floor(lo / step) * step; ; t += step) {
    ticks.push(+t.toPrecision(12));
    if (t >= hi - step * 1e-9 || ticks.length > 100) break;
  }
  return { ticks, lo: ticks[0], hi: ticks[ticks.length - 1] };
}

/** Log ticks: powers of ten (whole decades around the data), plus 2 and 5 x 10^k where the data span under ~2.5 decades. */
export function logTicks(lo: number, hi: number): Ticks {
  const a = Math.floor(Math.log10(lo) + 1e-9);
  let b = Math.ceil(Math.log10(hi) - 1e-9);
  if (b === a) b = a + 1;
  const span = Math.log10(hi) - Math.log10(lo);
  const mult = span <= 2.5 ? [1, 2, 5] : [1];
  const ticks: number[] = [];
  for (let e = a; e <= b; e++) for (const m of mult) if (m === 1 || e < b) ticks.push(+(m * 10 ** e).toPrecision(12));
  if (mult.length > 1) {
    // Trim to the data (keeping one tick beyond each end), so a narrow range is not squashed.
    const i0 = Math.max(0, ticks.findIndex((t) => t > lo * (1 + 1e-9)) - 1);
    let i1 = ticks.length - 1;
    while (i1 > 0 && ticks[i1 - 1] >= hi * (1 - 1e-9)) i1--;
    const t = ticks.slice(i0, i1 + 1);
    return { ticks: t, lo: t[0], hi: t[t.length - 1] };
  }
  return { ticks, lo: 10 ** a, hi: 10 ** b };
}

function scale(lo: number, hi: number, a: number, b: number, log?: boolean): (v: number) => number {
  if (log) {
    const L = Math.log10(lo), H = Math.log10(hi);
    return (v) => a + ((Math.log10(v) - L) / (H - L || 1)) * (b - a);
  }
  return (v) => a + ((v - lo) / (hi - lo || 1)) * (b - a);
}

function text(x: number, y: number, s: unknown, o: TextOptions = {}): string {
  const attrs = [`x="${r2(x)}"`, `y="${r2(y)}"`, `font-size="${o.size ?? 12}"`];
  if (o.anchor) attrs.push(`text-anchor="${o.anchor}"`);
  if (o.weight) attrs.push(`font-weight="${o.weight}"`);
  if (o.fill) attrs.push(`fill="${o.fill}"`);
  if (o.rotate) attrs.push(`transform="rotate(${o.rotate} ${r2(x)} ${r2(y)})"`);
  if (o.baseline) attrs.push(`dominant-baseline="${o.baseline}"`);
  return `<text ${attrs.join(' ')}>${esc(s)}</text>`;
}

function doc(width: number, height: number, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT}">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

/** Title, subtitle, legend row; returns the y where the plot may start. */
function header(o: ChartOptions, width: number, names: string[], styleOf: (n: string, x: number, y: number) => string, body: string[]): number {
  let y = 22;
  if (o.title) {
    body.push(text(width / 2, y, o.title, { size: 15, anchor: 'middle', weight: 'bold' }));
    y += 18;
  }
  if (o.subtitle) {
    for (const line of ([] as string[]).concat(o.subtitle)) {
      body.push(text(width / 2, y, line, { size: 11, anchor: 'middle', fill: '#444' }));
      y += 15;
    }
  }
  // Legend: entries laid out left to right, wrapping.
  const items = names.map((n) => ({ n, w: 34 + n.length * 6.6 }));
  const rows: Array<typeof items> = [[]];
  let rowW = 0;
  for (const it of items) {
    if (rowW + it.w > width - 40 && rows[rows.length - 1].length) {
      rows.push([]);
      rowW = 0;
    }
    rows[rows.length - 1].push(it);
    rowW += it.w;
  }
  y += 4;
  for (const row of rows) {
    const total = row.reduce((a, it) => a + it.w, 0);
    let x = (width - total) / 2;
    for (const it of row) {
      body.push(styleOf(it.n, x, y));
      body.push(text(x + 28, y + 4, it.n, { size: 12 }));
      x += it.w;
    }
    y += 18;
  }
  return y + 4;
}

function axes(o: AxesOptions, box: Box, xs: Axis | null, ys: Axis, body: string[]): void {
  const { x0, x1, y0, y1 } = box;
  // Grid and y ticks.
  for (const t of ys.ticks) {
    const y = ys.map(t);
    body.push(`<line x1="${r2(x0)}" y1="${r2(y)}" x2="${r2(x1)}" y2="${r2(y)}" stroke="#e3e3e3" stroke-width="1"/>`);
    body.push(text(x0 - 6, y + 4, (o.yFormat ?? fmt)(t), { size: 11, anchor: 'end', fill: '#333' }));
  }
  if (xs) {
    for (const t of xs.ticks) {
      const x = xs.map(t);
      body.push(`<line x1="${r2(x)}" y1="${r2(y0)}" x2="${r2(x)}" y2="${r2(y1)}" stroke="#efefef" stroke-width="1"/>`);
      body.push(`<line x1="${r2(x)}" y1="${r2(y1)}" x2="${r2(x)}" y2="${r2(y1 + 5)}" stroke="#333"/>`);
      body.push(text(x, y1 + 18, (o.xFormat ?? fmt)(t), { size: 11, anchor: 'middle', fill: '#333' }));
    }
  }
  body.push(`<path d="M${r2(x0)} ${r2(y0)} V${r2(y1)} H${r2(x1)}" fill="none" stroke="#333" stroke-width="1.2"/>`);
  if (o.xTitle) body.push(text((x0 + x1) / 2, y1 + 38, o.xTitle + (o.logX ? ' (log scale)' : ''), { size: 12, anchor: 'middle' }));
  if (o.yTitle) body.push(text(16, (y0 + y1) / 2, o.yTitle + (o.logY ? ' (log scale)' : ''), { size: 12, anchor: 'middle', rotate: -90 }));
}

function footer(o: ChartOptions, width: number, height: number, body: string[]): number {
  const notes = ([] as string[]).concat(o.notes ?? []);
  notes.forEach((n, i) => body.push(text(12, height - 8 - (notes.length - 1 - i) * 14, n, { size: 10, fill: '#555' })));
  return notes.length * 14;
}

function yRange(o: ChartOptions, values: Array<number | null | undefined>, log?: boolean): Ticks {
  const v = values.filter((x): x is number => x != null && Number.isFinite(x) && (!log || x > 0));
  let lo = o.yMin ?? (log ? Math.min(...v) : Math.min(0, ...v));
  let hi = o.yMax ?? Math.max(...v);
  if (!v.length) [lo, hi] = log ? [1, 10] : [0, 1];
  if (log) {
    const t = logTicks(lo, hi);
    return { ticks: t.ticks, lo: o.yMin ?? t.lo, hi: o.yMax ?? t.hi };
  }
  return niceTicks(lo, hi * 1.05);
}

/** A line chart: series of {name, points: [[x, y], ...], color?, dash?}. */
export function lineChart(o: LineChartOptions): string {
  const width = o.width ?? 600, height = o.height ?? 380;
  const series = o.series.map((s, i) => ({ ...s, color: s.color ?? (o.colors ?? PALETTE)[i % PALETTE.length], dash: s.dash ?? DASHES[i % DASHES.length] }));
  const body: string[] = [];
  const byName = new Map(series.map((s) => [s.name, s]));
  const top = header(o, width, series.map((s) => s.name), (n, x, y) => {
    const s = byName.get(n)!;
    return `<line x1="${r2(x)}" y1="${r2(y)}" x2="${r2(x + 22)}" y2="${r2(y)}" stroke="${s.color}" stroke-width="2.5"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/><circle cx="${r2(x + 11)}" cy="${r2(y)}" r="3.5" fill="${s.color}"/>`;
  }, body);
  const bottom = height - 52 - footer(o, width, height, body);
  const box = { x0: 70, x1: width - 24, y0: top, y1: bottom };
  const pts = series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!o.logX || x > 0) && (!o.logY || y > 0)));
  const xsVals = pts.map(([x]) => x);
  let xr: Ticks;
  if (o.xTicks) xr = { ticks: o.xTicks, lo: o.xMin ?? Math.min(...o.xTicks, ...xsVals), hi: o.xMax ?? Math.max(...o.xTicks, ...xsVals) };
  else if (o.logX) {
    const distinct = [...new Set(xsVals)].sort((a, b) => a - b);
    xr = distinct.length && distinct.length <= 8 ? { ticks: distinct, lo: distinct[0], hi: distinct[distinct.length - 1] } : logTicks(Math.min(...xsVals), Math.max(...xsVals));
  } else xr = niceTicks(o.xMin ?? Math.min(...xsVals), o.xMax ?? Math.max(...xsVals));
  if (o.xMin != null) xr.lo = o.xMin;
  if (o.xMax != null) xr.hi = o.xMax;
  // A little room at both ends of the x axis, so end points do not sit on the frame.
  const pad = 0.04 * (box.x1 - box.x0);
  const xmap = scale(xr.lo, xr.hi, box.x0 + pad, box.x1 - pad, o.logX);
  const yr = yRange(o, pts.map(([, y]) => y), o.logY);
  const ymap = scale(yr.lo, yr.hi, box.y1, box.y0, o.logY);
  axes(o, box, { ticks: xr.ticks, map: xmap }, { ticks: yr.ticks, map: ymap }, body);
  for (const s of series) {
    const p = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!o.logX || x > 0) && (!o.logY || y > 0));
    if (!p.length) continue;
    body.push(`<polyline points="${p.map(([x, y]) => `${r2(xmap(x))},${r2(ymap(y))}`).join(' ')}" fill="none" stroke="${s.color}" stroke-width="2.5"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''} stroke-linejoin="round"/>`);
    for (const [x, y] of p) {
      if (s.markers !== false) body.push(`<circle cx="${r2(xmap(x))}" cy="${r2(ymap(y))}" r="3.5" fill="${s.color}"><title>${esc(`${s.name}: ${fmt(x)}, ${fmt(y)}`)}</title></circle>`);
      if (s.showValues ?? o.showValues) body.push(text(xmap(x) + 5, ymap(y) - 7, (o.valueFormat ?? fmt)(y), { size: 10, fill: s.color }));
    }
  }
  return doc(width, height, body);
}

/** Grouped bars: one group per category, one bar per series ({name, values: [y | null per category]}). */
export function barChart(o: BarChartOptions): string {
  const width = o.width ?? 600, height = o.height ?? 380;
  const series = o.series.map((s, i) => ({ ...s, color: s.color ?? (o.colors ?? PALETTE)[i % PALETTE.length] }));
  const body: string[] = [];
  const byName = new Map(series.map((s) => [s.name, s]));
  const top = header(o, width, series.map((s) => s.name), (n, x, y) => `<rect x="${r2(x + 4)}" y="${r2(y - 6)}" width="14" height="12" fill="${byName.get(n)!.color}"/>`, body);
  const bottom = height - 46 - footer(o, width, height, body);
  const box = { x0: 70, x1: width - 16, y0: top + (o.showValues === false ? 0 : 10), y1: bottom };
  const all = series.flatMap((s) => s.values);
  const yr = yRange(o, all, o.logY);
  const ymap = scale(yr.lo, yr.hi, box.y1, box.y0, o.logY);
  axes(o, box, null, { ticks: yr.ticks, map: ymap }, body);
  const groupW = (box.x1 - box.x0) / o.categories.length;
  const barW = Math.min(42, (groupW * 0.8) / series.length);
  o.categories.forEach((cat, ci) => {
    const cx = box.x0 + groupW * (ci + 0.5);
    body.push(text(cx, box.y1 + 18, cat, { size: 12, anchor: 'middle', weight: 'bold' }));
    if (o.categoryNotes?.[ci]) body.push(text(cx, box.y1 + 32, o.categoryNotes[ci], { size: 10, anchor: 'middle', fill: '#555' }));
    series.forEach((s, si) => {
      const x = cx - (barW * series.length) / 2 + si * barW;
      const v = s.values[ci];
      const ok = v != null && Number.isFinite(v) && (!o.logY || v > 0);
      if (ok) {
        const yv = Math.max(box.y0, Math.min(box.y1, ymap(v)));
        body.push(`<rect x="${r2(x + 1)}" y="${r2(yv)}" width="${r2(barW - 2)}" height="${r2(box.y1 - yv)}" fill="${s.color}"><title>${esc(`${cat} ${s.name}: ${fmt(v)}`)}</title></rect>`);
        if (o.showValues !== false) body.push(text(x + barW / 2, yv - 4, (o.valueFormat ?? fmt)(v), { size: barW < 22 ? 8.5 : 10, anchor: 'middle', fill: '#222' }));
      } else if (o.showValues !== false) {
        body.push(text(x + barW / 2, box.y1 - 6, 'n/a', { size: 9, anchor: 'middle', fill: '#888', rotate: barW < 22 ? -90 : 0 }));
      }
    });
  });
  return doc(width, height, body);
}

/** Several chart documents side by side / in rows, as one SVG document. */
export function combine(charts: string[], o: CombineOptions = {}): string {
  const cols = o.cols ?? charts.length;
  const size = (s: string): [number, number] => {
    const m = /<svg[^>]*\bwidth="([\d.]+)"[^>]*\bheight="([\d.]+)"/.exec(s);
    return m ? [Number(m[1]), Number(m[2])] : [600, 380];
  };
  const sizes = charts.map(size);
  const colW = Array.from({ length: cols }, (_, c) => Math.max(0, ...sizes.filter((_, i) => i % cols === c).map((s) => s[0])));
  const rowCount = Math.ceil(charts.length / cols);
  const rowH = Array.from({ length: rowCount }, (_, r) => Math.max(0, ...sizes.filter((_, i) => Math.floor(i / cols) === r).map((s) => s[1])));
  const titleH = o.title ? 30 : 0;
  const notes = ([] as string[]).concat(o.notes ?? []);
  const notesH = notes.length ? notes.length * 14 + 8 : 0;
  const W = colW.reduce((a, b) => a + b, 0), H = titleH + rowH.reduce((a, b) => a + b, 0) + notesH;
  const body: string[] = [];
  if (o.title) body.push(text(W / 2, 21, o.title, { size: 16, anchor: 'middle', weight: 'bold' }));
  charts.forEach((s, i) => {
    const c = i % cols, r = Math.floor(i / cols);
    const x = colW.slice(0, c).reduce((a, b) => a + b, 0), y = titleH + rowH.slice(0, r).reduce((a, b) => a + b, 0);
    body.push(s.trim().replace(/^<svg /, `<svg x="${x}" y="${y}" `));
  });
  notes.forEach((n, i) => body.push(text(12, H - notesH + 14 + i * 14, n, { size: 10.5, fill: '#444' })));
  return doc(W, H, body);
}

/** Writes an SVG document, making its folder; returns the file name. */
export function write(file: string, svgText: string): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, svgText);
  return file;
}

/** PNG preview through sharp (librsvg inside), for eyeballing a chart; resolves to the file name. */
export async function toPng(svgFile: string, pngFile: string = svgFile.replace(/\.svg$/, '.png'), density = 96): Promise<string> {
  // Loaded here, so that drawing SVG needs no sharp.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const sharp = require('sharp') as (input: string, o: { density: number }) => { png(): { toFile(f: string): Promise<unknown> } };
  await sharp(svgFile, { density }).png().toFile(pngFile);
  return pngFile;
}
