// Alerts: listing by state, acknowledge / resolve with a comment, audit trail.
import { api, canPlan } from "../api.js";
import { act, alertKind, alertText, onAlertsChanged } from "../alerts.js";
import { badge, errorBox, h, provenance, section } from "../dom.js";
import { dateTime, num, t } from "../i18n.js";

function alertCard(a, reload) {
  const comment = h("input", { placeholder: t("alerts.comment"), maxlength: "2000" });
  const problem = h("div");
  const button = (action, label) => h("button", { class: "btn secondary", type: "button", "data-action": action,
    onclick: async (e) => {
      e.target.disabled = true;
      try { await act(a, action, comment.value); reload(); }
      catch (err) { problem.replaceChildren(errorBox(err)); e.target.disabled = false; }
    } }, label);
  const actions = canPlan() && a.state !== "resolved"
    ? h("div", { class: "filters" }, comment,
      a.state === "open" ? button("acknowledge", t("alerts.ack")) : null, button("resolve", t("alerts.resolve")))
    : null;
  return h("div", { class: "panel", "data-alert": a.alert_id },
    h("div", { class: "page-head" },
      h("div", {}, badge(a.state, t(`state.${a.state}`)), " ", h("strong", {}, alertKind(a)), " · ",
        h("a", { href: `#/series?material=${encodeURIComponent(a.material_code)}&site=${encodeURIComponent(a.site_code)}` },
          `${a.material_code} · ${a.site_code}`)),
      h("span", { class: "small muted" }, `${t("alerts.raised")} ${dateTime(a.raised_at)}`)),
    h("div", {}, alertText(a)),
    h("div", { class: "small muted" },
      `${t("policy.position")} ${num(a.stock_position)} · ${t("inv.rop")} ${num(a.reorder_point)} · ` +
      `${t("inv.cover")} ${a.days_of_cover == null ? "—" : num(a.days_of_cover)} · lead time ${num(a.lead_time_days)}`),
    h("details", {}, h("summary", { class: "small" }, t("alerts.history")),
      h("ul", { class: "small" }, a.history.map((e) =>
        h("li", {}, `${dateTime(e.at)} · ${t(`state.${e.state}`)} · ${e.actor}${e.comment ? ` · “${e.comment}”` : ""}`)))),
    actions, problem, provenance(a.provenance));
}

export function render(view, params) {
  let state = params.get("state") || "open";
  const list = h("div", { id: "alerts-list" });
  const select = h("select", { name: "state", onchange: () => { state = select.value; load(); } },
    ...["open", "acknowledged", "resolved", ""].map((s) =>
      h("option", { value: s, selected: s === state }, s ? t(`state.${s}`) : t("common.all"))));
  view.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, t("alerts.title")), h("div", { class: "muted" }, t("alerts.sub"))),
      h("label", { class: "small muted" }, `${t("alerts.state")} `, select)),
    list);
  function load() {
    section(list, async () => {
      const r = await api("/alerts", { params: { state, page_size: 50 } });
      if (!r.alerts.length) return h("div", { class: "empty" }, t("alerts.none"));
      return r.alerts.map((a) => alertCard(a, load));
    });
  }
  load();
  return onAlertsChanged(load);
}
