// Charts with uPlot (vendored in /static/vendor). Each chart resizes with its container.
import { getLang, num, t } from "./i18n.js";

const DAY = 86400;

function isoToEpoch(iso) {
  const [y, m, d] = iso.split("-").map(Number);
  return Date.UTC(y, m - 1, d) / 1000;
}

function quantile(points, level) {
  const q = (points || []).find((p) => Math.abs(p.level - level) < 1e-9);
  return q ? q.value : null;
}

function autoSize(el, plot, height) {
  const observer = new ResizeObserver(() => plot.setSize({ width: Math.max(el.clientWidth, 200), height }));
  observer.observe(el);
}

function dateAxis() {
  const fmt = new Intl.DateTimeFormat(getLang(), { day: "2-digit", month: "2-digit", timeZone: "UTC" });
  return {
    space: 70,
    stroke: "#5d6b7e",
    grid: { stroke: "#eef2f6" },
    values: (_, ticks) => ticks.map((v) => fmt.format(new Date(v * 1000))),
  };
}

// Actual weekly demand (bars), forecast P50 (line) and the P50–P90 band.
export function demandChart(el, series) {
  const xs = series.points.map((p) => isoToEpoch(p.period_start));
  const actual = series.points.map((p) => (p.is_forecast ? null : p.quantity));
  const p50 = series.points.map((p) => quantile(p.forecast, 0.5));
  const p90 = series.points.map((p) => quantile(p.forecast, 0.9));
  const height = 320;
  const bars = window.uPlot.paths.bars({ size: [0.6, 40] });
  const plot = new window.uPlot(
    {
      width: Math.max(el.clientWidth, 200),
      height,
      scales: { x: { time: true }, y: { range: (_, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [dateAxis(), { stroke: "#5d6b7e", grid: { stroke: "#eef2f6" }, values: (_, ticks) => ticks.map((v) => num(v, 0)) }],
      series: [
        { label: t("series.week"), value: (_, v) => (v == null ? "—" : new Date(v * 1000).toISOString().slice(0, 10)) },
        { label: t("series.actual"), stroke: "#7aa7d6", fill: "rgba(122,167,214,0.55)", paths: bars, points: { show: false },
          value: (_, v) => num(v) },
        { label: t("series.p50"), stroke: "#0b5cad", width: 2, value: (_, v) => num(v) },
        { label: t("series.p90"), stroke: "rgba(11,92,173,0.45)", dash: [6, 4], width: 1, value: (_, v) => num(v) },
      ],
      bands: [{ series: [3, 2], fill: "rgba(11,92,173,0.16)" }],
      cursor: { drag: { x: false, y: false } },
    },
    [xs, actual, p50, p90],
    el,
  );
  autoSize(el, plot, height);
  return plot;
}

// One external series as a line.
export function lineChart(el, dates, values, label) {
  const height = 220;
  const plot = new window.uPlot(
    {
      width: Math.max(el.clientWidth, 200),
      height,
      scales: { x: { time: true } },
      axes: [dateAxis(), { stroke: "#5d6b7e", grid: { stroke: "#eef2f6" }, values: (_, ticks) => ticks.map((v) => num(v, 2)) }],
      series: [{ label: t("series.week"), value: (_, v) => (v == null ? "—" : new Date(v * 1000).toISOString().slice(0, 10)) },
        { label, stroke: "#0b5cad", width: 2, spanGaps: false, value: (_, v) => num(v, 3) }],
    },
    [dates.map(isoToEpoch), values],
    el,
  );
  autoSize(el, plot, height);
  return plot;
}

export { DAY };
