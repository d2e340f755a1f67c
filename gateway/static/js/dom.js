// DOM helpers. Everything is built with nodes and textContent: data never becomes markup.
import { t, dateTime, when } from "./i18n.js";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) { el.replaceChildren(); return el; }

export function loading() { return h("div", { class: "loading", role: "status" }, t("common.loading")); }

export function errorBox(error, retry) {
  const box = h("div", { class: "error", role: "alert" }, describeError(error));
  if (retry) box.append(h("button", { class: "btn secondary retry", type: "button", onclick: retry }, t("common.retry")));
  return box;
}

export function describeError(error) {
  if (!error || error.status === undefined) return t("error.network");
  if (error.status === 0) return t("error.network");
  if (error.status === 401) return t("error.401");
  if (error.status === 403) return t("error.403");
  if (error.status === 503) return t("error.503");
  const violations = (error.body?.error?.field_violations || []).map((v) => `${v.field}: ${v.description}`);
  const message = violations.length ? violations.join("; ") : error.message;
  return t("error.generic", { status: error.status, message });
}

// Renders into `target` what `load()` resolves to, with a loading state and an error state with retry.
export async function section(target, load) {
  clear(target).append(loading());
  try {
    const content = await load();
    // Absent parts (null, undefined, false) are skipped, as h() skips them.
    clear(target).append(...[content].flat().filter((part) => part !== null && part !== undefined && part !== false));
  } catch (error) {
    if (error?.status === 401) return; // the session handler already redirects to the login page
    clear(target).append(errorBox(error, () => section(target, load)));
  }
}

export function provenance(p) {
  if (!p) return null;
  const parts = [];
  if (p.data_watermark) parts.push([t("common.watermark"), p.data_watermark]);
  if (p.model_name) parts.push([t("common.model"), `${p.model_name} v${p.model_version}`]);
  if (p.generated_at) parts.push([t("common.updated"), when(p.generated_at)]);
  const el = h("div", { class: "provenance", title: p.generated_at ? dateTime(p.generated_at) : "" });
  parts.forEach(([label, value], i) => {
    if (i) el.append(" · ");
    el.append(`${label} `, h("b", {}, value));
  });
  if (p.from_cache) el.append(` · ${t("common.cache")}`);
  return el;
}

export function badge(kind, text) { return h("span", { class: `badge ${kind}` }, text); }

export function table(columns, rows, { onRow } = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : "" }, c.label)));
  const body = rows.map((row) =>
    h(
      "tr",
      { class: onRow ? "link" : "", onclick: onRow ? () => onRow(row) : null, tabindex: onRow ? "0" : null },
      columns.map((c) => {
        const value = c.render(row);
        return h("td", { class: c.num ? "num" : "" }, value instanceof Node ? value : String(value ?? "—"));
      }),
    ),
  );
  return h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
}

export function toast(text) {
  const el = h("div", { class: "toast" }, text);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), 6000);
}
