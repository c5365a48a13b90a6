/**
 * Draws one line chart as SVG from a chart's points: axes from zero, five
 * ticks on each, the axis labels, and one polyline with its points marked per
 * series, each series named in a legend. No dependency: the bench writes the
 * file it measured, so a reader sees the curve of that run.
 */
import type { ChartPoint } from './figures.js';

const WIDTH = 640;
const HEIGHT = 400;
const MARGIN = { left: 80, right: 180, top: 40, bottom: 60 };
const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

/** A round step near range / 5 (1, 2 or 5 times a power of ten). */
function niceStep(max: number): number {
  const raw = max / 5;
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10) * power;
}

function label(v: number): string {
  const abs = Math.abs(v);
  if (abs >= 1e6) return `${+(v / 1e6).toPrecision(3)} M`;
  if (abs >= 1e3) return `${+(v / 1e3).toPrecision(3)} k`;
  return `${+v.toPrecision(3)}`;
}

const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function drawLineChart(title: string, points: readonly ChartPoint[]): string {
  if (points.length === 0) throw new Error(`chart ${title}: no points to draw`);
  const first = points[0] as ChartPoint;
  const series = [...new Set(points.map((p) => p.series))];
  const xMax = Math.max(...points.map((p) => p.x));
  const yMax = Math.max(...points.map((p) => p.y));
  const xStep = niceStep(xMax > 0 ? xMax : 1);
  const yStep = niceStep(yMax > 0 ? yMax : 1);
  const xTop = Math.ceil((xMax > 0 ? xMax : 1) / xStep) * xStep;
  const yTop = Math.ceil((yMax > 0 ? yMax : 1) / yStep) * yStep;
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const px = (x: number) => MARGIN.left + (x / xTop) * plotW;
  const py = (y: number) => MARGIN.top + plotH - (y / yTop) * plotH;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12" role="img">`,
    `<title>${escapeXml(`${title}: ${first.yLabel} by ${first.xLabel}`)}</title>`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${MARGIN.left}" y="22" font-size="15" font-weight="bold">${escapeXml(title)}</text>`,
  ];
  for (let x = 0; x <= xTop + xStep / 2; x += xStep) {
    out.push(
      `<line x1="${px(x)}" y1="${py(0)}" x2="${px(x)}" y2="${py(0) + 5}" stroke="black"/>`,
      `<text x="${px(x)}" y="${py(0) + 18}" text-anchor="middle">${label(x)}</text>`,
    );
  }
  for (let y = 0; y <= yTop + yStep / 2; y += yStep) {
    out.push(
      `<line x1="${MARGIN.left}" y1="${py(y)}" x2="${MARGIN.left + plotW}" y2="${py(y)}" stroke="#ddd"/>`,
      `<text x="${MARGIN.left - 8}" y="${py(y) + 4}" text-anchor="end">${label(y)}</text>`,
    );
  }
  out.push(
    `<line x1="${MARGIN.left}" y1="${py(0)}" x2="${MARGIN.left + plotW}" y2="${py(0)}" stroke="black"/>`,
    `<line x1="${MARGIN.left}" y1="${MARGIN.top}" x2="${MARGIN.left}" y2="${py(0)}" stroke="black"/>`,
    `<text x="${MARGIN.left + plotW / 2}" y="${HEIGHT - 15}" text-anchor="middle">${escapeXml(first.xLabel)}</text>`,
    `<text x="18" y="${MARGIN.top + plotH / 2}" text-anchor="middle" transform="rotate(-90 18 ${MARGIN.top + plotH / 2})">${escapeXml(first.yLabel)}</text>`,
  );
  series.forEach((name, i) => {
    const colour = COLOURS[i % COLOURS.length] as string;
    const line = points.filter((p) => p.series === name).sort((a, b) => a.x - b.x);
    out.push(
      `<polyline fill="none" stroke="${colour}" stroke-width="2" points="${line.map((p) => `${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(' ')}"/>`,
    );
    for (const p of line) out.push(`<circle cx="${px(p.x).toFixed(1)}" cy="${py(p.y).toFixed(1)}" r="3" fill="${colour}"/>`);
    const ly = MARGIN.top + 10 + i * 20;
    const lx = MARGIN.left + plotW + 15;
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 20}" y2="${ly}" stroke="${colour}" stroke-width="2"/>`,
      `<text x="${lx + 26}" y="${ly + 4}">${escapeXml(name)}</text>`,
    );
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
