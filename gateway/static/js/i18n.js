// Texts in Portuguese (pt-BR, the default) and English; numbers and dates follow the chosen language.
const DICT = {
  "pt-BR": {
    "nav.overview": "Visão geral", "nav.series": "Material × local", "nav.inventory": "Estoque",
    "nav.alerts": "Alertas", "nav.external": "Fatores externos", "nav.models": "Modelo", "nav.logout": "Sair",
    "nav.menu": "Menu", "bell.title": "Alertas abertos",
    "login.title": "Entrar", "login.user": "Usuário", "login.password": "Senha", "login.submit": "Entrar",
    "login.hint": "Em desenvolvimento, os usuários e senhas são mostrados uma vez por `nova demo`.",
    "login.failed": "Usuário ou senha incorretos.", "login.throttled": "Muitas tentativas. Tente de novo em {s} s.",
    "common.loading": "Carregando…", "common.retry": "Tentar de novo", "common.empty": "Nada encontrado.",
    "common.updated": "atualizado em", "common.watermark": "dados até", "common.cache": "do cache",
    "common.model": "modelo", "common.next": "Próxima página", "common.first": "Primeira página",
    "common.apply": "Aplicar", "common.open": "Abrir", "common.all": "Todos", "common.na": "indisponível",
    "common.search": "Buscar",
    "common.restarted": "Os dados mudaram desde a primeira página: a lista recomeçou do início.",
    "error.401": "Sessão expirada. Entre novamente.", "error.403": "Seu perfil não permite esta ação.",
    "error.503": "Serviço indisponível no momento.", "error.network": "Sem conexão com o servidor.",
    "error.generic": "Erro {status}: {message}",
    "overview.title": "Visão geral", "overview.sub": "Indicadores de estoque e demanda",
    "overview.risk": "Maiores riscos de ruptura", "overview.alerts": "Alertas abertos",
    "overview.freshness": "Atualização dos dados",
    "overview.freshness.text": "Modelo de leitura em {rm}; dados confirmados na ingestão: {sor}.",
    "kpi.total_demand": "Demanda total", "kpi.demand_lines": "Linhas de requisição", "kpi.fill_rate": "Nível de atendimento",
    "kpi.stockout_rate": "Taxa de ruptura", "kpi.stockout_days": "Dias em ruptura", "kpi.days_of_cover": "Dias de cobertura",
    "kpi.inventory_turnover": "Giro de estoque", "kpi.average_inventory_units": "Estoque médio (un.)",
    "kpi.average_inventory_value": "Estoque médio (R$)", "kpi.abc_a_share": "Participação classe A",
    "kpi.abc_b_share": "Participação classe B", "kpi.abc_c_share": "Participação classe C",
    "kpi.lead_time_mean_days": "Lead time médio", "kpi.lead_time_p50_days": "Lead time mediano",
    "kpi.lead_time_p90_days": "Lead time P90", "kpi.lead_time_std_days": "Desvio do lead time",
    "kpi.on_time_rate": "Entregas no prazo", "kpi.forecast_wape": "Erro da previsão (WAPE)",
    "kpi.forecast_bias": "Viés da previsão", "kpi.forecast_interval_coverage": "Cobertura do intervalo P90",
    "kpi.sla_risk_series": "Séries com risco de SLA", "kpi.critical_site_stockout_days": "Ruptura em locais críticos",
    "unit.days": "dias", "unit.units": "un.", "unit.lines": "linhas", "unit.series": "séries", "unit.turns/year": "giros/ano",
    "inv.title": "Situação do estoque", "inv.sub": "Ordenado por risco (maior primeiro)",
    "inv.material": "Material", "inv.site": "Local", "inv.family": "Família", "inv.status": "Situação",
    "inv.on_hand": "Em mãos", "inv.on_order": "Em pedido", "inv.position": "Posição", "inv.ss": "Estoque de segurança",
    "inv.rop": "Ponto de pedido", "inv.cover": "Cobertura (dias)", "inv.suggested": "Sugestão de compra",
    "inv.risk": "Risco", "inv.min_status": "Situação mínima", "inv.unbounded": "sem consumo",
    "inv.simulated": "Estoque simulado (demonstração): posições calculadas de um razão simulado a partir da demanda e dos prazos reais, não de contagens.",
    "status.normal": "Normal", "status.attention": "Atenção", "status.critical": "Crítico", "status.unspecified": "—",
    "series.title": "Material × local", "series.pick": "Escolha um material e um local",
    "series.material": "Código do material", "series.site": "Código do local",
    "series.demand": "Demanda semanal e previsão", "series.actual": "Demanda real", "series.p50": "Previsão P50",
    "series.band": "Faixa P50–P90", "series.p90": "P90", "series.week": "Semana",
    "series.position": "Posição de estoque × ponto de pedido", "series.policy": "Política de reposição",
    "series.decomp": "Decomposição do ponto de pedido", "series.forecast": "Previsão",
    "series.no_inventory": "Sem posição de estoque para esta série.",
    "policy.ss": "Estoque de segurança", "policy.rop": "Ponto de pedido", "policy.out": "Nível máximo (order-up-to)",
    "policy.qty": "Quantidade sugerida", "policy.date": "Data sugerida do pedido", "policy.cover": "Dias de cobertura",
    "policy.position": "Posição de estoque", "policy.ltd": "Demanda esperada no lead time",
    "policy.dem": "Parte da incerteza da demanda", "policy.ltv": "Parte da variabilidade do lead time",
    "policy.target": "Nível de serviço alvo", "policy.source": "origem", "policy.lt": "Lead time (média / P90)",
    "policy.obs": "Observações de lead time", "policy.method": "Método", "policy.fallback": "modelo reserva",
    "fc.class": "Padrão de demanda", "fc.method": "Método", "fc.fallback": "Reserva usada",
    "class.smooth": "suave", "class.erratic": "errático", "class.intermittent": "intermitente", "class.lumpy": "irregular",
    "class.unspecified": "não classificado",
    "alerts.title": "Alertas", "alerts.sub": "Mais recentes primeiro", "alerts.state": "Estado",
    "alerts.ack": "Reconhecer", "alerts.resolve": "Resolver", "alerts.comment": "Comentário (opcional)",
    "alerts.raised": "Gerado em", "alerts.history": "Histórico", "alerts.none": "Nenhum alerta.",
    "alerts.new": "Novo alerta: {msg}", "alerts.live": "ao vivo", "alerts.offline": "desconectado",
    "alerts.kind.reorder_point": "Ponto de pedido atingido", "alerts.kind.cover_below_lead_time": "Cobertura abaixo do lead time",
    "alerts.kind.unspecified": "Alerta",
    "alerts.text.reorder_point": "{material} em {site}: posição de estoque {position} atingiu o ponto de pedido {rop}",
    "alerts.text.cover_below_lead_time": "{material} em {site}: {cover} dias de cobertura, abaixo do lead time do fornecedor de {lead} dias",
    "state.open": "Aberto", "state.acknowledged": "Reconhecido", "state.resolved": "Resolvido", "state.unspecified": "—",
    "ext.title": "Fatores externos", "ext.sub": "Clima, câmbio, juros e inflação", "ext.series": "Séries",
    "ext.start": "De", "ext.end": "Até",
    "models.title": "Modelo de previsão", "models.sub": "Versões no repositório e backtest",
    "models.name": "Modelo", "models.version": "Versão", "models.state": "Estado", "models.quantiles": "Quantis",
    "models.spec": "Especificação de features", "models.created": "Criado em", "models.reason": "Motivo",
    "models.serving": "em produção", "models.backtest": "Backtest (origem móvel)", "models.method": "Método",
    "models.no_metrics": "Sem métricas de backtest no sidecar deste modelo.",
  },
  "en": {
    "nav.overview": "Overview", "nav.series": "Material × site", "nav.inventory": "Inventory",
    "nav.alerts": "Alerts", "nav.external": "External factors", "nav.models": "Model", "nav.logout": "Log out",
    "nav.menu": "Menu", "bell.title": "Open alerts",
    "login.title": "Sign in", "login.user": "Username", "login.password": "Password", "login.submit": "Sign in",
    "login.hint": "In development, users and passwords are printed once by `nova demo`.",
    "login.failed": "Wrong username or password.", "login.throttled": "Too many attempts. Try again in {s} s.",
    "common.loading": "Loading…", "common.retry": "Retry", "common.empty": "Nothing found.",
    "common.updated": "updated at", "common.watermark": "data up to", "common.cache": "from cache",
    "common.model": "model", "common.next": "Next page", "common.first": "First page",
    "common.apply": "Apply", "common.open": "Open", "common.all": "All", "common.na": "not available",
    "common.search": "Search",
    "common.restarted": "The data changed since the first page: the list started over from the beginning.",
    "error.401": "Session expired. Please sign in again.", "error.403": "Your role does not allow this.",
    "error.503": "Service unavailable right now.", "error.network": "Cannot reach the server.",
    "error.generic": "Error {status}: {message}",
    "overview.title": "Overview", "overview.sub": "Inventory and demand indicators",
    "overview.risk": "Highest stock-out risks", "overview.alerts": "Open alerts",
    "overview.freshness": "Data freshness",
    "overview.freshness.text": "Read model at {rm}; committed in ingestion: {sor}.",
    "kpi.total_demand": "Total demand", "kpi.demand_lines": "Requisition lines", "kpi.fill_rate": "Fill rate",
    "kpi.stockout_rate": "Stock-out rate", "kpi.stockout_days": "Stock-out days", "kpi.days_of_cover": "Days of cover",
    "kpi.inventory_turnover": "Inventory turnover", "kpi.average_inventory_units": "Average inventory (units)",
    "kpi.average_inventory_value": "Average inventory (BRL)", "kpi.abc_a_share": "Class A share",
    "kpi.abc_b_share": "Class B share", "kpi.abc_c_share": "Class C share",
    "kpi.lead_time_mean_days": "Mean lead time", "kpi.lead_time_p50_days": "Median lead time",
    "kpi.lead_time_p90_days": "Lead time P90", "kpi.lead_time_std_days": "Lead time std. dev.",
    "kpi.on_time_rate": "On-time deliveries", "kpi.forecast_wape": "Forecast error (WAPE)",
    "kpi.forecast_bias": "Forecast bias", "kpi.forecast_interval_coverage": "P90 interval coverage",
    "kpi.sla_risk_series": "Series at SLA risk", "kpi.critical_site_stockout_days": "Critical-site stock-out days",
    "unit.days": "days", "unit.units": "units", "unit.lines": "lines", "unit.series": "series", "unit.turns/year": "turns/yr",
    "inv.title": "Inventory status", "inv.sub": "Sorted by risk (highest first)",
    "inv.material": "Material", "inv.site": "Site", "inv.family": "Family", "inv.status": "Status",
    "inv.on_hand": "On hand", "inv.on_order": "On order", "inv.position": "Position", "inv.ss": "Safety stock",
    "inv.rop": "Reorder point", "inv.cover": "Cover (days)", "inv.suggested": "Suggested order",
    "inv.risk": "Risk", "inv.min_status": "Minimum status", "inv.unbounded": "no demand",
    "inv.simulated": "Simulated stock (demo): positions computed from a ledger simulated from the real demand and lead times, not from counts.",
    "status.normal": "Normal", "status.attention": "Attention", "status.critical": "Critical", "status.unspecified": "—",
    "series.title": "Material × site", "series.pick": "Pick a material and a site",
    "series.material": "Material code", "series.site": "Site code",
    "series.demand": "Weekly demand and forecast", "series.actual": "Actual demand", "series.p50": "Forecast P50",
    "series.band": "P50–P90 band", "series.p90": "P90", "series.week": "Week",
    "series.position": "Stock position vs reorder point", "series.policy": "Reorder policy",
    "series.decomp": "Reorder point decomposition", "series.forecast": "Forecast",
    "series.no_inventory": "No stock position for this series.",
    "policy.ss": "Safety stock", "policy.rop": "Reorder point", "policy.out": "Order-up-to level",
    "policy.qty": "Suggested quantity", "policy.date": "Suggested order date", "policy.cover": "Days of cover",
    "policy.position": "Stock position", "policy.ltd": "Expected lead-time demand",
    "policy.dem": "Demand uncertainty part", "policy.ltv": "Lead-time variability part",
    "policy.target": "Target service level", "policy.source": "source", "policy.lt": "Lead time (mean / P90)",
    "policy.obs": "Lead-time observations", "policy.method": "Method", "policy.fallback": "fallback model",
    "fc.class": "Demand pattern", "fc.method": "Method", "fc.fallback": "Fallback used",
    "class.smooth": "smooth", "class.erratic": "erratic", "class.intermittent": "intermittent", "class.lumpy": "lumpy",
    "class.unspecified": "unclassified",
    "alerts.title": "Alerts", "alerts.sub": "Newest first", "alerts.state": "State",
    "alerts.ack": "Acknowledge", "alerts.resolve": "Resolve", "alerts.comment": "Comment (optional)",
    "alerts.raised": "Raised at", "alerts.history": "History", "alerts.none": "No alerts.",
    "alerts.new": "New alert: {msg}", "alerts.live": "live", "alerts.offline": "disconnected",
    "alerts.kind.reorder_point": "Reorder point reached", "alerts.kind.cover_below_lead_time": "Cover below lead time",
    "alerts.kind.unspecified": "Alert",
    "alerts.text.reorder_point": "{material} at {site}: stock position {position} reached the reorder point {rop}",
    "alerts.text.cover_below_lead_time": "{material} at {site}: {cover} days of cover, below the supplier lead time of {lead} days",
    "state.open": "Open", "state.acknowledged": "Acknowledged", "state.resolved": "Resolved", "state.unspecified": "—",
    "ext.title": "External factors", "ext.sub": "Weather, exchange rate, interest and inflation", "ext.series": "Series",
    "ext.start": "From", "ext.end": "To",
    "models.title": "Forecast model", "models.sub": "Versions in the repository and backtest",
    "models.name": "Model", "models.version": "Version", "models.state": "State", "models.quantiles": "Quantiles",
    "models.spec": "Feature spec", "models.created": "Created at", "models.reason": "Reason",
    "models.serving": "serving", "models.backtest": "Backtest (rolling origin)", "models.method": "Method",
    "models.no_metrics": "No backtest metrics in this model's sidecar.",
  },
};

const LANGS = ["pt-BR", "en"];
let lang = LANGS.includes(localStorage.getItem("nova.lang")) ? localStorage.getItem("nova.lang") : "pt-BR";

export function getLang() { return lang; }

export function setLang(next) {
  lang = LANGS.includes(next) ? next : "pt-BR";
  localStorage.setItem("nova.lang", lang);
  document.documentElement.lang = lang;
}

export function t(key, params = {}) {
  const text = DICT[lang][key] ?? DICT["pt-BR"][key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(params[name] ?? ""));
}

export function has(key) { return key in DICT[lang]; }

export function num(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return new Intl.NumberFormat(lang, { maximumFractionDigits: digits }).format(value);
}

export function unit(u) {
  return has(`unit.${u}`) ? t(`unit.${u}`) : u;
}

export function dateTime(iso) {
  if (!iso) return "—";
  return new Intl.DateTimeFormat(lang, { dateStyle: "short", timeStyle: "medium" }).format(new Date(iso));
}

// Time only for today, date and time otherwise: enough for "updated at" on a card.
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const today = new Date().toDateString() === d.toDateString();
  return today
    ? new Intl.DateTimeFormat(lang, { timeStyle: "medium" }).format(d)
    : new Intl.DateTimeFormat(lang, { dateStyle: "short", timeStyle: "short" }).format(d);
}

export function date(iso) {
  if (!iso) return "—";
  // API dates are calendar days (YYYY-MM-DD): format them without a time-zone shift.
  const [y, m, d] = iso.split("-").map(Number);
  return new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeZone: "UTC" }).format(Date.UTC(y, m - 1, d));
}

// Static texts in index.html carry data-i18n (text) or data-i18n-aria (aria-label) attributes.
export function translateStatic(root = document) {
  root.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  root.querySelectorAll("[data-i18n-aria]").forEach((el) => { el.setAttribute("aria-label", t(el.dataset.i18nAria)); });
}
