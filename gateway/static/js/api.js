// The session (token in sessionStorage: gone when the tab closes) and calls to /api/v1.
const KEY = "nova.session";
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.retryAfter = body?.error?.retry_after_seconds ?? null;
  }
}

export function session() {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY));
    if (s && new Date(s.expires_at) > new Date()) return s;
  } catch { /* no session */ }
  return null;
}

export function onSessionEnd(fn) { listeners.add(fn); }

export function endSession() {
  sessionStorage.removeItem(KEY);
  listeners.forEach((fn) => fn());
}

export function canPlan() {
  const role = session()?.role;
  return role === "planner" || role === "admin";
}

export async function login(username, password) {
  let response;
  try {
    response = await fetch("/api/v1/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
  } catch {
    throw new ApiError(0, null); // no answer at all: the views show error.network
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  sessionStorage.setItem(KEY, JSON.stringify(body));
  return body;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    (Array.isArray(value) ? value : [value]).forEach((v) => q.append(key, v));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

export async function api(path, { params, method = "GET", body } = {}) {
  const s = session();
  if (!s) {
    endSession();
    throw new ApiError(401, null);
  }
  let response;
  try {
    response = await fetch(`/api/v1${path}${query(params)}`, {
      method,
      headers: {
        Authorization: `Bearer ${s.access_token}`,
        ...(body ? { "Content-Type": "application/json" } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch {
    throw new ApiError(0, null);
  }
  const data = await response.json().catch(() => null);
  if (response.status === 401) endSession();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export function streamUrl(path, params = {}) {
  return `/api/v1${path}${query({ ...params, access_token: session()?.access_token })}`;
}
