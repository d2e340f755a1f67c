// The alert bell: open alerts loaded once, then kept current by server-sent events (no reload).
import { api, canPlan, session, streamUrl } from "./api.js";
import { badge, clear, h, toast } from "./dom.js";
import { dateTime, has, num, t } from "./i18n.js";

const alerts = new Map(); // alert_id -> AlertOut
const subscribers = new Set();
let source = null;
let retryTimer = null;

export function openAlerts() {
  return [...alerts.values()].filter((a) => a.state === "open").sort((a, b) => (a.raised_at < b.raised_at ? 1 : -1));
}

export function onAlertsChanged(fn) { subscribers.add(fn); return () => subscribers.delete(fn); }

function changed() {
  renderBell();
  subscribers.forEach((fn) => fn());
}

export function upsert(alert) {
  alerts.set(alert.alert_id, alert);
  changed();
}

export function alertKind(alert) { return t(`alerts.kind.${alert.kind}`); }

// The service writes its message in English; the dashboard says the same from the alert's own fields, in
// the language chosen. A kind it does not know keeps the service's message.
export function alertText(alert) {
  const key = `alerts.text.${alert.kind}`;
  if (!has(key)) return alert.message;
  return t(key, {
    material: alert.material_code, site: alert.site_code,
    position: num(alert.stock_position, 3), rop: num(alert.reorder_point, 3),
    cover: alert.days_of_cover == null ? "∞" : num(alert.days_of_cover), lead: num(alert.lead_time_days),
  });
}

export async function act(alert, action, comment = "") {
  const updated = await api(`/alerts/${encodeURIComponent(alert.alert_id)}/${action}`, {
    method: "POST",
    body: { comment },
  });
  upsert(updated);
  return updated;
}

async function refresh() {
  // Covers whatever was raised while the stream was down (WatchAlerts does not replay).
  const page = await api("/alerts", { params: { state: "open", page_size: 50 } });
  for (const a of page.alerts) alerts.set(a.alert_id, a);
  changed();
}

function setLive(on) {
  const dot = document.getElementById("live-dot");
  dot.dataset.state = on ? "on" : "off";
  dot.title = on ? t("alerts.live") : t("alerts.offline");
}

export function startAlerts() {
  stopAlerts();
  if (!session()) return;
  refresh().catch(() => {});
  source = new EventSource(streamUrl("/alerts/stream"));
  source.addEventListener("open", () => {
    setLive(true);
    refresh().catch(() => {});
  });
  source.addEventListener("alert", (event) => {
    const alert = JSON.parse(event.data);
    const isNew = !alerts.has(alert.alert_id);
    upsert(alert);
    if (isNew && alert.state === "open") toast(t("alerts.new", { msg: alertText(alert) || alertKind(alert) }));
  });
  source.addEventListener("stream_error", () => setLive(false));
  source.addEventListener("error", () => {
    setLive(false);
    if (source && source.readyState === EventSource.CLOSED) {
      // The server refused the stream (e.g. an expired token): check the session, then retry later.
      source = null;
      api("/watermark").then(() => { retryTimer = setTimeout(startAlerts, 5000); }).catch(() => {});
    }
  });
}

export function stopAlerts() {
  clearTimeout(retryTimer);
  if (source) source.close();
  source = null;
  alerts.clear();
  setLive(false);
}

function renderBell() {
  const open = openAlerts();
  const count = document.getElementById("bell-count");
  count.textContent = String(open.length);
  count.hidden = open.length === 0;
  const panel = document.getElementById("bell-panel");
  if (!panel.hidden) renderPanel(panel);
}

function renderPanel(panel) {
  const open = openAlerts();
  clear(panel);
  if (!open.length) {
    panel.append(h("div", { class: "empty" }, t("alerts.none")));
    return;
  }
  for (const a of open.slice(0, 20)) {
    const ack = canPlan()
      ? h("button", {
          class: "btn secondary small ack",
          type: "button",
          "data-alert": a.alert_id,
          onclick: async (e) => {
            e.target.disabled = true;
            try { await act(a, "acknowledge"); } catch { e.target.disabled = false; }
          },
        }, t("alerts.ack"))
      : null;
    panel.append(
      h("div", { class: "bell-item", "data-alert": a.alert_id },
        h("div", { class: "row" }, h("strong", {}, alertKind(a)), badge(a.state, t(`state.${a.state}`))),
        h("div", {}, alertText(a)),
        h("div", { class: "row" },
          h("a", { href: `#/series?material=${encodeURIComponent(a.material_code)}&site=${encodeURIComponent(a.site_code)}` },
            `${a.material_code} · ${a.site_code}`),
          h("span", { class: "small muted" }, dateTime(a.raised_at)),
          ack,
        ),
      ),
    );
  }
}

export function initBell() {
  const bell = document.getElementById("bell");
  const panel = document.getElementById("bell-panel");
  bell.addEventListener("click", () => {
    panel.hidden = !panel.hidden;
    bell.setAttribute("aria-expanded", String(!panel.hidden));
    if (!panel.hidden) renderPanel(panel);
  });
  document.addEventListener("click", (e) => {
    if (!panel.hidden && !e.target.closest(".bell-wrap")) {
      panel.hidden = true;
      bell.setAttribute("aria-expanded", "false");
    }
  });
}
