// Model page: versions in the repository (serving first) and the backtest table from the sidecar metrics.
import { api } from "../api.js";
import { badge, h, section, table } from "../dom.js";
import { dateTime, num, t } from "../i18n.js";

// The sidecar's backtest metrics: {method: {overall: {metric: value}, <class>: {...}}}, possibly nested
// under "metrics" or "backtest.metrics".
export function backtestRows(metrics) {
  let m = metrics;
  if (m && typeof m === "object" && m.backtest && typeof m.backtest === "object") m = m.backtest;
  if (m && typeof m === "object" && m.metrics && typeof m.metrics === "object") m = m.metrics;
  if (!m || typeof m !== "object") return null;
  const rows = Object.entries(m)
    .filter(([, v]) => v && typeof v === "object" && v.overall && typeof v.overall === "object")
    .map(([method, v]) => ({ method, ...v.overall }));
  return rows.length ? rows : null;
}

const LOWER_IS_BETTER = new Set(["scaled_pinball", "mase", "wape", "pinball"]);
// The headline metrics, in this order, when the sidecar has them; otherwise every numeric metric.
const HEADLINE = ["scaled_pinball", "mase", "wape", "bias", "coverage_p50", "coverage_p80", "coverage_p90", "coverage_p95"];

function backtestTable(rows) {
  const all = [...new Set(rows.flatMap((r) => Object.keys(r).filter((k) => k !== "method" && typeof r[k] === "number")))];
  const headline = HEADLINE.filter((n) => all.includes(n));
  const names = headline.length ? headline : all;
  const best = {};
  for (const n of names) {
    const values = rows.map((r) => r[n]).filter((v) => typeof v === "number");
    if (LOWER_IS_BETTER.has(n)) best[n] = Math.min(...values);
    if (n === "bias") best[n] = values.reduce((a, b) => (Math.abs(b) < Math.abs(a) ? b : a));
  }
  const cols = [{ label: t("models.method"), render: (r) => r.method },
    ...names.map((n) => ({ label: n, num: true, render: (r) => {
      const v = r[n];
      return typeof v === "number" ? h("span", { class: v === best[n] ? "best" : "" }, num(v, 3)) : "—";
    } }))];
  return table(cols, rows);
}

export function render(view) {
  const body = h("div", { id: "models" });
  view.append(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, t("models.title")), h("div", { class: "muted" }, t("models.sub")))),
    body);
  section(body, async () => {
    const r = await api("/models");
    if (!r.models.length) return h("div", { class: "empty" }, t("common.empty"));
    const versions = table([
      { label: t("models.name"), render: (m) => m.name },
      { label: t("models.version"), render: (m) => h("span", {}, m.version, " ", m.serving ? badge("serving", t("models.serving")) : null) },
      { label: t("models.state"), render: (m) => badge(m.state, m.state) },
      { label: t("models.quantiles"), render: (m) => m.quantiles.map((q) => `P${Math.round(q * 100)}`).join(" ") },
      { label: t("models.spec"), render: (m) => m.feature_spec_version },
      { label: t("models.created"), render: (m) => (m.created_at ? dateTime(m.created_at) : "—") },
      { label: t("models.reason"), render: (m) => m.reason || "" },
    ], r.models);
    const shown = r.models.find((m) => m.serving) || r.models[0];
    const rows = backtestRows(shown.metrics);
    return [
      h("div", { class: "panel" }, versions),
      h("div", { class: "panel", id: "backtest" },
        h("h2", {}, `${t("models.backtest")} · ${shown.name} v${shown.version}`),
        rows ? backtestTable(rows) : h("div", { class: "empty" }, t("models.no_metrics"))),
    ];
  });
}
