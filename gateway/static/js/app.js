// Dashboard entry: hash router (#/overview, #/series?material=..&site=.., ...), header, session and language.
import { endSession, onSessionEnd, session } from "./api.js";
import { initBell, startAlerts, stopAlerts } from "./alerts.js";
import { clear, h } from "./dom.js";
import { getLang, setLang, t, translateStatic } from "./i18n.js";
import * as alertsView from "./views/alerts.js";
import * as external from "./views/external.js";
import * as inventory from "./views/inventory.js";
import * as loginView from "./views/login.js";
import * as models from "./views/models.js";
import * as overview from "./views/overview.js";
import * as series from "./views/series.js";

const ROUTES = { overview, series, inventory, alerts: alertsView, external, models };
let cleanup = null;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [name, query = ""] = raw.split("?");
  return { name: name || "overview", params: new URLSearchParams(query) };
}

function renderHeader() {
  const s = session();
  document.getElementById("topbar").hidden = !s;
  document.getElementById("who").textContent = s ? `${s.username} (${s.role})` : "";
  document.getElementById("lang").textContent = getLang() === "en" ? "PT" : "EN";
  translateStatic();
}

function render() {
  if (typeof cleanup === "function") cleanup();
  cleanup = null;
  const view = clear(document.getElementById("view"));
  renderHeader();
  const { name, params } = parseHash();
  if (!session()) {
    loginView.render(view, params, {
      onLogin: () => {
        startAlerts();
        if (parseHash().name === "login") location.hash = "#/overview";
        else render();
      },
      rerender: render,
    });
    return;
  }
  const module = ROUTES[name];
  document.querySelectorAll(".nav a").forEach((a) => a.classList.toggle("active", a.dataset.route === name));
  document.getElementById("nav").classList.remove("open");
  if (!module) {
    view.append(h("div", { class: "empty" }, t("common.empty")));
    return;
  }
  cleanup = module.render(view, params) || null;
}

function init() {
  setLang(getLang());
  initBell();
  document.getElementById("lang").addEventListener("click", () => {
    setLang(getLang() === "en" ? "pt-BR" : "en");
    render();
  });
  document.getElementById("logout").addEventListener("click", () => endSession());
  const toggle = document.getElementById("menu-toggle");
  toggle.addEventListener("click", () => {
    const nav = document.getElementById("nav");
    nav.classList.toggle("open");
    toggle.setAttribute("aria-expanded", String(nav.classList.contains("open")));
  });
  onSessionEnd(() => {
    stopAlerts();
    render();
  });
  window.addEventListener("hashchange", render);
  if (session()) startAlerts();
  render();
}

init();
