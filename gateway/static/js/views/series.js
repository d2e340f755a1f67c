// Material x site: demand with the forecast band, stock position against the reorder point, the reorder
// policy with its decomposition, the forecast details and the series' alerts.
import { api, canPlan } from "../api.js";
import { act, alertKind, alertText, onAlertsChanged } from "../alerts.js";
import { badge, h, provenance, section, table } from "../dom.js";
import { date, dateTime, num, t } from "../i18n.js";
import { demandChart } from "../charts.js";
import { simulatedNote } from "./inventory.js";
import { noteText } from "../notes.js";

// A call two panels share: made once, by whichever panel asks first. A failed call is forgotten when it
// fails, so the next ask (a panel's Retry) makes it again rather than getting the same settled error.
function shared(call) {
  let pending = null;
  return () => (pending ??= call().catch((error) => {
    pending = null;
    throw error;
  }));
}

function picker(material, site) {
  const m = h("input", { name: "material", value: material, placeholder: "010601", list: "material-options", required: true });
  const s = h("input", { name: "site", value: site, placeholder: "ALMOX-BA", list: "site-options", required: true });
  const mList = h("datalist", { id: "material-options" });
  const sList = h("datalist", { id: "site-options" });
  let timer = null;
  const suggest = (input, path, list, key, labelOf) => input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      try {
        const r = await api(path, { params: { q: input.value, page_size: 10 } });
        list.replaceChildren(...r[key].map((x) => h("option", { value: x.code }, labelOf(x))));
      } catch { /* suggestions are optional */ }
    }, 250);
  });
  suggest(m, "/materials", mList, "materials", (x) => `${x.name} (${x.family})`);
  suggest(s, "/sites", sList, "sites", (x) => [x.client, x.region].filter(Boolean).join(" · "));
  return h("form", { class: "picker panel", id: "series-picker", onsubmit: (e) => {
      e.preventDefault();
      location.hash = `#/series?material=${encodeURIComponent(m.value.trim())}&site=${encodeURIComponent(s.value.trim())}`;
    } },
    h("label", {}, t("series.material"), m), mList,
    h("label", {}, t("series.site"), s), sList,
    h("button", { class: "btn", type: "submit" }, t("common.open")));
}

// Stock position against the reorder point and safety stock of the reorder policy (forecast-serving is the
// authority on the policy; the inventory row's own copy is used when there is no policy).
function gauge(row, policy) {
  const rop = policy ? policy.reorder_point : row.reorder_point;
  const ss = policy ? policy.safety_stock : row.safety_stock;
  const top = Math.max(row.stock_position, rop, policy ? policy.order_up_to : 0, ss, 1) * 1.15;
  const share = (v) => Math.max(0, Math.min(100, (v / top) * 100));
  // The colour is the read model's status (it also weighs cover against the supplier lead time).
  const fill = h("div", { class: `fill ${row.status}` });
  fill.style.width = `${share(row.stock_position)}%`;
  const mark = (value, label, low) => {
    const pos = share(value);
    const edge = pos < 15 ? " edge-left" : pos > 85 ? " edge-right" : "";
    const el = h("div", { class: `mark${low ? " low" : ""}${edge}` }, h("span", {}, `${label} ${num(value)}`));
    el.style.left = `${pos}%`;
    return el;
  };
  return h("div", { class: "gauge", id: "stock-gauge", role: "img",
    "aria-label": `${t("policy.position")} ${num(row.stock_position)}, ${t("policy.rop")} ${num(rop)}` },
    fill, mark(ss, t("inv.ss"), true), mark(rop, t("inv.rop"), false));
}

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function render(view, params) {
  const material = params.get("material") || "";
  const site = params.get("site") || "";
  const title = h("h1", { id: "series-title" }, material && site ? `${material} · ${site}` : t("series.title"));
  const subtitle = h("div", { class: "muted", id: "series-subtitle" });
  view.append(h("div", { class: "page-head" }, h("div", {}, title, subtitle)), picker(material, site));
  if (!material || !site) {
    view.append(h("div", { class: "empty" }, t("series.pick")));
    return;
  }
  const filter = { material, site };
  const chart = h("div", { class: "chart", id: "demand-chart" });
  const chartBox = h("div");
  const position = h("div", { id: "series-position" });
  const policyBox = h("div", { id: "series-policy" });
  const forecastBox = h("div", { id: "series-forecast" });
  const alertsBox = h("div", { id: "series-alerts" });
  view.append(
    h("div", { class: "panel" }, h("h2", {}, t("series.demand")), chartBox),
    h("div", { class: "grid two" },
      h("div", { class: "panel" }, h("h2", {}, t("series.position")), position),
      h("div", { class: "panel" }, h("h2", {}, t("series.policy")), policyBox)),
    h("div", { class: "grid two" },
      h("div", { class: "panel" }, h("h2", {}, t("series.forecast")), forecastBox),
      h("div", { class: "panel" }, h("h2", {}, t("nav.alerts")), alertsBox)),
  );

  api("/materials", { params: { q: material, page_size: 20 } }).then((r) => {
    const found = r.materials.find((x) => x.code === material);
    if (found) subtitle.textContent = `${found.name} · ${found.family} · ${found.unit}`;
  }).catch(() => {});

  // One Forecast call feeds both the chart (when the read model has no band for the series yet) and the panel.
  const forecast = shared(() => api("/forecast", { params: { material, site } }));
  section(chartBox, async () => {
    const series = await api("/demand", { params: { ...filter, include_forecast: true } });
    if (!series.points.length) return h("div", { class: "empty" }, t("common.empty"));
    const parts = [chart];
    let shown = series;
    if (!series.points.some((p) => p.is_forecast)) {
      const f = await forecast().catch(() => null);
      if (f && f.weeks.length) {
        shown = { ...series, points: [...series.points, ...f.weeks.map((w) => ({
          period_start: w.week_start, quantity: 0, lines: 0, forecast: w.quantiles, is_forecast: true }))] };
        parts.push(provenance(f.provenance));
      }
    }
    queueMicrotask(() => demandChart(chart, shown));
    parts.splice(1, 0, h("div", { class: "legend-note" }, `${t("series.band")} · ${series.unit}`));
    return [...parts, provenance(series.provenance)];
  });

  // One ReorderPolicy call feeds both the position gauge and the policy panel.
  const reorderPolicy = shared(() => api("/reorder-policy", { params: filter }));
  section(position, async () => {
    const [inv, policy] = await Promise.all([api("/inventory", { params: filter }), reorderPolicy().catch(() => null)]);
    const row = inv.rows[0];
    if (!row) return h("div", { class: "empty" }, t("series.no_inventory"));
    return [
      h("div", {}, badge(row.status, t(`status.${row.status}`))),
      simulatedNote([row]),
      gauge(row, policy),
      kv([
        [t("inv.on_hand"), `${num(row.on_hand)} ${row.unit}`], [t("inv.on_order"), num(row.on_order)],
        [t("policy.position"), num(row.stock_position)], [t("inv.ss"), num(row.safety_stock)],
        [t("inv.rop"), num(row.reorder_point)],
        [t("inv.cover"), row.days_of_cover == null ? t("inv.unbounded") : num(row.days_of_cover)],
        [t("inv.suggested"), num(row.suggested_order_quantity)],
      ]),
      provenance(inv.provenance),
    ];
  });

  section(policyBox, async () => {
    const p = await reorderPolicy();
    const d = p.decomposition;
    const total = Math.max(d.expected_lead_time_demand + d.demand_part + d.lead_time_variability_part, 1e-9);
    const part = (cls, v) => { const el = h("div", { class: cls, title: num(v) }); el.style.width = `${(Math.max(v, 0) / total) * 100}%`; return el; };
    return [
      kv([
        [t("policy.ss"), `${num(p.safety_stock)} ${p.unit}`], [t("policy.rop"), num(p.reorder_point)],
        [t("policy.out"), num(p.order_up_to)], [t("policy.qty"), num(p.suggested_order_quantity)],
        [t("policy.date"), date(p.suggested_order_date)],
        [t("policy.cover"), p.days_of_cover == null ? t("inv.unbounded") : num(p.days_of_cover)],
        [t("policy.method"), p.fallback ? `${p.method} (${t("policy.fallback")})` : p.method],
        [t("policy.position"), p.stock_position_known ? num(p.stock_position) : `${num(p.stock_position)} (${noteText(p.stock_position_note)})`],
      ]),
      h("h3", {}, t("series.decomp")),
      h("div", { class: "stack", id: "rop-stack" }, part("ltd", d.expected_lead_time_demand), part("dem", d.demand_part),
        part("ltv", d.lead_time_variability_part)),
      kv([
        [h("span", {}, h("span", { class: "swatch ltd" }), t("policy.ltd")), num(d.expected_lead_time_demand)],
        [h("span", {}, h("span", { class: "swatch dem" }), t("policy.dem")), num(d.demand_part)],
        [h("span", {}, h("span", { class: "swatch ltv" }), t("policy.ltv")), num(d.lead_time_variability_part)],
        [t("policy.target"), `${num(d.service_target * 100)}% (${t("policy.source")}: ${d.service_target_source})`],
        [t("policy.lt"), `${num(d.lead_time_mean_days)} / ${num(d.lead_time_p90_days)} ${t("unit.days")}`],
        [t("policy.obs"), `${num(d.lead_time_observations, 0)} (${d.lead_time_scope})`],
      ]),
      provenance(p.provenance),
    ];
  });

  section(forecastBox, async () => {
    const f = await forecast();
    const levels = f.weeks.length ? f.weeks[0].quantiles.map((q) => q.level) : [];
    const cols = [
      { label: "", render: (w) => date(w.week_start) },
      ...levels.map((lv) => ({ label: `P${Math.round(lv * 100)}`, num: true,
        render: (w) => num(w.quantiles.find((q) => q.level === lv)?.value) })),
      { label: "μ", num: true, render: (w) => num(w.mean) },
    ];
    return [
      kv([[t("fc.class"), t(`class.${f.demand_class}`)], [t("fc.method"), f.method],
        [t("fc.fallback"), f.fallback ? noteText(f.fallback_reason) || "✓" : "—"]]),
      table(cols, f.weeks),
      provenance(f.provenance),
    ];
  });

  const drawAlerts = () => section(alertsBox, async () => {
    const r = await api("/alerts", { params: { ...filter, page_size: 10 } });
    if (!r.alerts.length) return h("div", { class: "empty" }, t("alerts.none"));
    return r.alerts.map((a) => h("div", { class: "bell-item" },
      h("div", {}, badge(a.state, t(`state.${a.state}`)), " ", h("strong", {}, alertKind(a))),
      h("div", {}, alertText(a)), h("span", { class: "small muted" }, dateTime(a.raised_at)),
      canPlan() && a.state === "open"
        ? h("button", { class: "btn secondary", type: "button", onclick: () => act(a, "acknowledge").catch(() => {}) }, t("alerts.ack"))
        : null));
  });
  drawAlerts();
  return onAlertsChanged(drawAlerts);
}
