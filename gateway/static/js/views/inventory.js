// Inventory status: rows sorted by risk (server side), with filters and paging.
import { api } from "../api.js";
import { badge, h, provenance, section, table } from "../dom.js";
import { num, t } from "../i18n.js";

export function seriesLink(row) {
  location.hash = `#/series?material=${encodeURIComponent(row.material_code)}&site=${encodeURIComponent(row.site_code)}`;
}

// Positions computed from simulated stock records (the demo's ledger) are not counts: say so above them.
export function simulatedNote(rows) {
  return rows.some((r) => r.simulated) ? h("div", { class: "small muted simulated-note" }, t("inv.simulated")) : null;
}

export function inventoryColumns() {
  return [
    { key: "material", label: t("inv.material"), render: (r) => r.material_code },
    { key: "site", label: t("inv.site"), render: (r) => r.site_code },
    { key: "family", label: t("inv.family"), render: (r) => r.family },
    { key: "status", label: t("inv.status"), render: (r) => badge(r.status, t(`status.${r.status}`)) },
    { key: "on_hand", label: t("inv.on_hand"), num: true, render: (r) => num(r.on_hand) },
    { key: "on_order", label: t("inv.on_order"), num: true, render: (r) => num(r.on_order) },
    { key: "position", label: t("inv.position"), num: true, render: (r) => `${num(r.stock_position)} ${r.unit}` },
    { key: "ss", label: t("inv.ss"), num: true, render: (r) => num(r.safety_stock) },
    { key: "rop", label: t("inv.rop"), num: true, render: (r) => num(r.reorder_point) },
    { key: "cover", label: t("inv.cover"), num: true, render: (r) => (r.days_of_cover == null ? t("inv.unbounded") : num(r.days_of_cover)) },
    { key: "suggested", label: t("inv.suggested"), num: true, render: (r) => num(r.suggested_order_quantity) },
    { key: "risk", label: t("inv.risk"), num: true, render: (r) => num(r.risk, 2) },
  ];
}

export function render(view, params) {
  const state = { min_status: params.get("min_status") || "", family: params.get("family") || "",
    site: params.get("site") || "", material: params.get("material") || "", tokens: [""] };
  const out = h("div", { id: "inventory-table" });
  const field = (name, label, el) => { el.value = state[name]; el.name = name; return h("label", {}, label, el); };
  const status = h("select", {},
    h("option", { value: "" }, t("common.all")),
    ...["attention", "critical"].map((s) => h("option", { value: s }, t(`status.${s}`))));
  const form = h("form", { class: "filters", onsubmit: (e) => {
      e.preventDefault();
      const data = new FormData(form);
      for (const key of ["min_status", "family", "site", "material"]) state[key] = String(data.get(key) || "").trim();
      state.tokens = [""];
      load();
    } },
    field("min_status", t("inv.min_status"), status),
    field("family", t("inv.family"), h("input", { placeholder: "EPI" })),
    field("site", t("inv.site"), h("input", { placeholder: "ALMOX-BA" })),
    field("material", t("inv.material"), h("input", {})),
    h("button", { class: "btn", type: "submit" }, t("common.apply")));
  view.append(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, t("inv.title")), h("div", { class: "muted" }, t("inv.sub")))),
    h("div", { class: "panel" }, form, out));

  const fetchPage = (token) => api("/inventory", { params: {
    min_status: state.min_status, family: state.family, site: state.site, material: state.material,
    page_size: 25, page_token: token } });

  function load() {
    section(out, async () => {
      const token = state.tokens[state.tokens.length - 1];
      let r;
      let restarted = false;
      try {
        r = await fetchPage(token);
      } catch (error) {
        // A page token is only valid while the data under the listing is unchanged: the server answers
        // 409 ABORTED once a batch changed it, and the listing restarts from its first page.
        if (!token || error?.status !== 409 || error.body?.error?.code !== "ABORTED") throw error;
        state.tokens = [""];
        restarted = true;
        r = await fetchPage("");
      }
      if (!r.rows.length) return h("div", { class: "empty" }, t("common.empty"));
      const note = restarted ? h("div", { class: "small muted" }, t("common.restarted")) : null;
      const nav = h("div", { class: "filters" },
        state.tokens.length > 1 ? h("button", { class: "btn secondary", type: "button",
          onclick: () => { state.tokens = [""]; load(); } }, t("common.first")) : null,
        r.page.next_page_token ? h("button", { class: "btn secondary", type: "button",
          onclick: () => { state.tokens.push(r.page.next_page_token); load(); } }, t("common.next")) : null,
        h("span", { class: "small muted" }, `${num(r.page.total_size, 0)}`));
      return [note, simulatedNote(r.rows), table(inventoryColumns(), r.rows, { onRow: seriesLink }), nav,
        provenance(r.provenance)]
        .filter(Boolean);
    });
  }
  load();
}
