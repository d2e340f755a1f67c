// Overview: KPI cards with provenance, highest risks, open alerts and data freshness.
import { api } from "../api.js";
import { onAlertsChanged, openAlerts, alertKind, alertText } from "../alerts.js";
import { badge, h, provenance, section, table } from "../dom.js";
import { dateTime, has, num, t, unit } from "../i18n.js";
import { inventoryColumns, seriesLink, simulatedNote } from "./inventory.js";
import { noteText } from "../notes.js";

export const OVERVIEW_KPIS = [
  "total_demand", "fill_rate", "stockout_rate", "days_of_cover",
  "lead_time_p90_days", "sla_risk_series", "forecast_wape", "forecast_interval_coverage",
];

function kpiCard(k, prov) {
  const label = has(`kpi.${k.name}`) ? t(`kpi.${k.name}`) : k.name.replaceAll("_", " ");
  const value = k.available
    ? h("div", { class: "value" }, num(k.value, k.unit === "%" ? 1 : 1), " ", h("span", { class: "small muted" }, unit(k.unit)))
    : h("div", { class: "value na" }, t("common.na"));
  return h("div", { class: "card", "data-kpi": k.name },
    h("div", { class: "label" }, label), value, k.note ? h("div", { class: "note" }, noteText(k.note)) : null, provenance(prov));
}

export function render(view) {
  const cards = h("div", { class: "cards", id: "kpis" });
  const risk = h("div", { id: "overview-risk" });
  const alertsBox = h("div", { id: "overview-alerts" });
  const fresh = h("div", { id: "overview-freshness" });
  view.append(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, t("overview.title")), h("div", { class: "muted" }, t("overview.sub")))),
    cards,
    h("div", { class: "grid two wide-left" },
      h("div", { class: "panel" }, h("h2", {}, t("overview.risk")), risk),
      h("div", {},
        h("div", { class: "panel" }, h("h2", {}, t("overview.alerts")), alertsBox),
        h("div", { class: "panel" }, h("h2", {}, t("overview.freshness")), fresh)),
    ),
  );
  section(cards, async () => {
    const r = await api("/kpis", { params: { name: OVERVIEW_KPIS } });
    return r.kpis.map((k) => kpiCard(k, r.provenance));
  });
  section(risk, async () => {
    const r = await api("/inventory", { params: { page_size: 10 } });
    if (!r.rows.length) return h("div", { class: "empty" }, t("common.empty"));
    const cols = inventoryColumns().filter((c) => ["material", "site", "status", "position", "rop", "cover"].includes(c.key));
    return [simulatedNote(r.rows), table(cols, r.rows, { onRow: seriesLink }), provenance(r.provenance)].filter(Boolean);
  });
  const drawAlerts = () => section(alertsBox, async () => {
    const open = openAlerts().slice(0, 6);
    if (!open.length) return h("div", { class: "empty" }, t("alerts.none"));
    return open.map((a) => h("div", { class: "bell-item" },
      h("div", {}, badge(a.state, t(`state.${a.state}`)), " ", h("strong", {}, alertKind(a))),
      h("a", { href: `#/series?material=${encodeURIComponent(a.material_code)}&site=${encodeURIComponent(a.site_code)}` }, alertText(a)),
      h("span", { class: "small muted" }, dateTime(a.raised_at))));
  });
  drawAlerts();
  const unsubscribe = onAlertsChanged(drawAlerts);
  section(fresh, async () => {
    const [rm, sor] = await Promise.all([api("/watermark"), api("/ingestion/watermark").catch(() => null)]);
    return h("div", {}, t("overview.freshness.text", { rm: rm.data_watermark, sor: sor ? sor.data_watermark : "—" }));
  });
  return unsubscribe;
}
