// Login: username and password -> token (POST /api/v1/login).
import { login } from "../api.js";
import { describeError, h } from "../dom.js";
import { getLang, setLang, t } from "../i18n.js";

export function render(view, _params, { onLogin, rerender }) {
  const error = h("div", { class: "error", role: "alert", hidden: true });
  const user = h("input", { id: "login-user", name: "username", autocomplete: "username", required: true });
  const pass = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { class: "btn", type: "submit", id: "login-submit" }, t("login.submit"));
  const form = h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      submit.disabled = true;
      error.hidden = true;
      try {
        await login(user.value.trim(), pass.value);
        onLogin();
      } catch (err) {
        error.hidden = false;
        error.textContent = err.status === 429
          ? t("login.throttled", { s: Math.ceil(err.retryAfter || 60) })
          : err.status === 401 ? t("login.failed") : describeError(err);
      } finally {
        submit.disabled = false;
      }
    },
  },
    h("label", {}, t("login.user"), user),
    h("label", {}, t("login.password"), pass),
    error,
    submit,
  );
  view.append(
    h("div", { class: "panel login" },
      h("div", { class: "lang-row" },
        h("button", { class: "btn secondary", type: "button", id: "login-lang",
          onclick: () => { setLang(getLang() === "en" ? "pt-BR" : "en"); rerender(); } },
          getLang() === "en" ? "PT" : "EN")),
      h("h1", {}, "Nova Corrente"),
      h("h2", { class: "muted" }, t("login.title")),
      form,
      h("p", { class: "small muted" }, t("login.hint")),
    ),
  );
  user.focus();
}
