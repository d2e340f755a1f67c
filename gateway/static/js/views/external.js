// External factors: the available series, and the chosen ones as small line charts.
import { api } from "../api.js";
import { h, provenance, section } from "../dom.js";
import { t } from "../i18n.js";
import { lineChart } from "../charts.js";

export function render(view) {
  const body = h("div", { id: "external" });
  view.append(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, t("ext.title")), h("div", { class: "muted" }, t("ext.sub")))),
    body);
  section(body, async () => {
    const catalog = await api("/external-series");
    if (!catalog.series.length) return h("div", { class: "empty" }, t("common.empty"));
    const boxes = catalog.series.map((s, i) => h("label", { class: "small" },
      h("input", { type: "checkbox", value: s.series_id, checked: i < 3 }), ` ${s.series_id} (${s.unit}, ${s.source})`));
    const start = h("input", { type: "date", name: "start" });
    const end = h("input", { type: "date", name: "end" });
    const charts = h("div", { class: "grid two", id: "external-charts" });
    const draw = () => section(charts, async () => {
      const ids = boxes.map((b) => b.querySelector("input")).filter((x) => x.checked).map((x) => x.value);
      if (!ids.length) return h("div", { class: "empty" }, t("common.empty"));
      const r = await api("/external-series", { params: { series: ids, start: start.value, end: end.value, grain: "week" } });
      const panels = r.series.map((s) => {
        const el = h("div", { class: "chart" });
        queueMicrotask(() => lineChart(el, s.dates, s.values, `${s.series_id} (${s.unit})`));
        return h("div", { class: "panel" }, h("h2", {}, s.series_id), h("div", { class: "small muted" }, `${s.source} · ${s.unit}`), el);
      });
      return [...panels, provenance(r.provenance)];
    });
    const form = h("form", { class: "filters panel", onsubmit: (e) => { e.preventDefault(); draw(); } },
      h("div", {}, h("div", { class: "small muted" }, t("ext.series")), ...boxes.map((b) => h("div", {}, b))),
      h("label", {}, t("ext.start"), start), h("label", {}, t("ext.end"), end),
      h("button", { class: "btn", type: "submit" }, t("common.apply")));
    draw();
    return [form, charts];
  });
}
