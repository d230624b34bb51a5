// dashboard.js owns the host dashboard: sign-in, the live product table,
// KPIs and chart, and the admin controls. Counts come only from the
// websocket (never from HTTP answers, which could be older than a frame
// already shown); admin actions go through the HTTP API with the bearer
// token, which lives in sessionStorage so it dies with the tab.

import { Live } from "./live.js";
import { Kpis } from "./kpi.js";
import { drawSales } from "./chart.js";
import * as fmt from "./format.js";

const TOKEN_KEY = "holdfast.admin_token";
/** Entries kept in the "Recent actions" list. */
const LOG_MAX = 20;
/** An admin call with no answer within this long is reported as failed. */
const CALL_TIMEOUT_MS = 10000;
/** KPIs that depend on the clock (rates, chart) are redrawn this often. */
const TICK_MS = 1000;
/** Largest quantity the controls send (the API takes u32; no show needs more). */
const QTY_MAX = 1000000;
const ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const show = ID_RE.test(params.get("show") || "") ? params.get("show") : null;
const locale = validLocale(params.get("lang")) || navigator.language || "en";
const topic = show ? `show:${show}` : "all";

function validLocale(tag) {
  if (!tag) return null;
  try {
    return Intl.getCanonicalLocales(tag)[0];
  } catch {
    return null;
  }
}

const kpis = new Kpis();
/** id -> {row, cells} of the product table, in the order SKUs appeared. */
const rows = new Map();
let live;
/** A token kept from an earlier load of this tab is checked against the
 * gateway once, when the first connection is up. */
let checkStoredToken = false;

// ----- sign-in ---------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function setSignedIn(on) {
  $("signin").hidden = on;
  $("session").hidden = !on;
  $("manage-controls").disabled = !on;
  $("create-controls").disabled = !on;
  document.body.dataset.auth = on ? "admin" : "none";
}

function authMessage(text, kind) {
  const p = $("auth-msg");
  p.textContent = text;
  p.dataset.kind = kind;
  p.hidden = !text;
}

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  setSignedIn(false);
  authMessage(reason || "", "error");
}

/** Asks the gateway who the token belongs to (the protocol's `auth`
 * message), and keeps it only if it is the admin token. */
async function verify(candidate) {
  try {
    const answer = await live.request({ op: "auth", token: candidate });
    if (answer.role === "admin") return { ok: true };
    return {
      ok: false,
      text: `This is a ${answer.role} token; the dashboard needs the admin token.`,
    };
  } catch (e) {
    if (e.error === "unauthorized") return { ok: false, text: "The gateway refused this token (unauthorized). Nothing was changed." };
    return { ok: false, text: `Could not check the token: ${e.message || e.error}.` };
  }
}

async function onSignIn(ev) {
  ev.preventDefault();
  const input = $("token");
  const candidate = input.value.trim();
  input.value = "";
  if (!candidate) return;
  $("signin-btn").disabled = true;
  const result = await verify(candidate);
  $("signin-btn").disabled = false;
  if (result.ok) {
    sessionStorage.setItem(TOKEN_KEY, candidate);
    setSignedIn(true);
    authMessage("", "ok");
  } else {
    signOut(result.text);
  }
}

// ----- admin calls -------------------------------------------------------------

/** Shows an action's outcome next to its controls and in the log. */
function report(target, ok, text) {
  const p = $(target);
  p.hidden = false;
  p.textContent = (ok ? "✓ " : "✗ ") + text;
  p.dataset.outcome = ok ? "ok" : "error";
  const li = document.createElement("li");
  li.dataset.outcome = p.dataset.outcome;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString(locale);
  li.append(time, ` ${p.textContent}`);
  const log = $("log");
  log.prepend(li);
  while (log.children.length > LOG_MAX) log.lastElementChild.remove();
}

/** One admin request. Resolves with the JSON answer, or null after
 * reporting the error (HTTP status, the API's stable code and message). */
async function call(target, method, path, body) {
  const t = token();
  if (!t) {
    report(target, false, "Sign in with the admin token first.");
    return null;
  }
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), CALL_TIMEOUT_MS);
  const fieldset = target === "create-result" ? $("create-controls") : $("manage-controls");
  fieldset.disabled = true;
  try {
    const r = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${t}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: abort.signal,
      cache: "no-store",
    });
    const text = await r.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    if (!r.ok) {
      const code = (json && json.error) || `http_${r.status}`;
      const message = (json && json.message) || text.slice(0, 200);
      report(target, false, `${r.status} ${code}: ${message}`);
      if (r.status === 401) {
        signOut("The gateway no longer accepts this token (unauthorized). Sign in again; nothing was changed.");
      }
      return null;
    }
    return json;
  } catch (e) {
    const why = e.name === "AbortError" ? "no answer in time" : e.message;
    report(target, false, `network error: ${why} (the change may or may not have happened; check the table)`);
    return null;
  } finally {
    clearTimeout(timer);
    fieldset.disabled = !token();
  }
}

function selectedSku() {
  return $("manage-sku").value;
}

function qty(input, min) {
  const n = Number(input.value);
  if (!Number.isInteger(n) || n < min || n > QTY_MAX) return null;
  return n;
}

function skuPath(id, tail) {
  return `/api/admin/skus/${encodeURIComponent(id)}${tail}`;
}

async function onRestock(ev) {
  ev.preventDefault();
  const id = selectedSku();
  const n = qty($("restock-qty"), 1);
  if (!id || n === null) return report("action-result", false, `Restock needs a product and 1–${QTY_MAX} units.`);
  const s = await call("action-result", "POST", skuPath(id, "/restock"), { qty: n });
  if (s) report("action-result", true, `Restocked ${id} by ${fmt.count(locale, n)}: ${fmt.count(locale, s.available)} available of ${fmt.count(locale, s.total)}.`);
}

async function onAdjust(ev) {
  ev.preventDefault();
  const id = selectedSku();
  const n = qty($("adjust-qty"), 1);
  if (!id || n === null) return report("action-result", false, `Adjust needs a product and 1–${QTY_MAX} units.`);
  const s = await call("action-result", "POST", skuPath(id, "/adjust"), { qty: n });
  if (s) report("action-result", true, `Removed ${fmt.count(locale, n)} from ${id}: ${fmt.count(locale, s.available)} available of ${fmt.count(locale, s.total)}.`);
}

async function onLimit(ev) {
  ev.preventDefault();
  const id = selectedSku();
  const n = qty($("limit-qty"), 0);
  if (!id || n === null) return report("action-result", false, `The limit must be 0–${QTY_MAX}.`);
  const s = await call("action-result", "PATCH", skuPath(id, ""), { buyer_limit: n });
  if (s) report("action-result", true, s.buyer_limit === 0 ? `${id}: no per-buyer limit.` : `${id}: at most ${fmt.count(locale, s.buyer_limit)} per buyer.`);
}

async function setWindow(win) {
  const id = selectedSku();
  if (!id) return report("action-result", false, "Choose a product first.");
  const s = await call("action-result", "POST", skuPath(id, "/window"), win);
  if (s) report("action-result", true, `${id}: sale ${describeState(s)}.`);
}

function onSchedule(ev) {
  ev.preventDefault();
  const at = new Date($("schedule-at").value).getTime();
  if (!Number.isFinite(at)) return report("action-result", false, "Pick a date and time to open the sale.");
  setWindow({ state: "scheduled", opens_at_ms: at });
}

async function onCreate(ev) {
  ev.preventDefault();
  const currency = $("new-currency").value.trim().toUpperCase();
  const priceMinor = fmt.parsePrice($("new-price").value, currency);
  const total = qty($("new-total"), 0);
  const limit = qty($("new-limit"), 0);
  const id = $("new-id").value.trim();
  const showId = $("new-show").value.trim();
  if (!ID_RE.test(id)) return report("create-result", false, "The SKU id must be 1–64 of A–Z a–z 0–9 . _ -");
  if (priceMinor === null) return report("create-result", false, `The price must be a number like 249.00 (in ${currency}).`);
  if (total === null || limit === null) return report("create-result", false, `Units and limit must be 0–${QTY_MAX}.`);
  if (showId && !ID_RE.test(showId)) return report("create-result", false, "The show id must be 1–64 of A–Z a–z 0–9 . _ -");
  const def = {
    id,
    title: $("new-title").value.trim(),
    price_minor: priceMinor,
    currency,
    image_url: $("new-image").value.trim(),
    total,
    buyer_limit: limit,
  };
  if (showId) def.show = showId;
  const w = $("new-window").value;
  if (w === "scheduled") {
    const at = new Date($("new-opens").value).getTime();
    if (!Number.isFinite(at)) return report("create-result", false, "A scheduled product needs an opening time.");
    def.window = { state: "scheduled", opens_at_ms: at };
  } else {
    def.window = { state: w };
  }
  const s = await call("create-result", "POST", "/api/admin/skus", def);
  if (s) {
    report("create-result", true, `Created ${s.id} with ${fmt.count(locale, s.total)} units (${describeState(s)}).`);
    $("new-id").value = "";
  }
}

// ----- the table ---------------------------------------------------------------

function describeState(s) {
  switch (s.state) {
    case "open":
      return s.sold_out ? "open, sold out" : "open";
    case "scheduled":
      return s.opens_at_ms ? `opens ${fmt.when(locale, s.opens_at_ms)}` : "scheduled";
    default:
      return s.state;
  }
}

const COLUMNS = [
  "image", "product", "price", "available", "held", "sold", "total", "state", "limit",
  "rate", "conversion", "abandoned", "sellthrough", "eta", "actions",
];
const LABELS = {
  price: "Price", available: "Available", held: "Held", sold: "Sold", total: "Total",
  state: "Sale", limit: "Limit", rate: "Sold/min", conversion: "Conv.", abandoned: "Abandoned",
  sellthrough: "Sell-through", eta: "Sell-out in",
};
const NUMERIC = new Set(["price", "available", "held", "sold", "total", "limit", "rate", "conversion", "abandoned", "sellthrough", "eta"]);

function makeRow(s) {
  const row = document.createElement("tr");
  row.dataset.sku = s.id;
  const cells = {};
  for (const col of COLUMNS) {
    const td = document.createElement("td");
    td.dataset.col = col;
    if (LABELS[col]) td.dataset.label = LABELS[col];
    if (NUMERIC.has(col)) td.className = "num";
    cells[col] = td;
    row.append(td);
  }
  const img = document.createElement("img");
  img.alt = "";
  img.width = 40;
  img.height = 40;
  img.loading = "lazy";
  cells.image.append(img);
  const title = document.createElement("span");
  title.className = "title";
  const id = document.createElement("span");
  id.className = "id";
  id.textContent = s.id;
  cells.product.append(title, id);
  const manage = document.createElement("button");
  manage.type = "button";
  manage.className = "quiet manage";
  manage.textContent = "Manage";
  manage.addEventListener("click", () => {
    $("manage-sku").value = s.id;
    syncManage();
    $("manage").scrollIntoView({ behavior: "smooth", block: "start" });
  });
  cells.actions.append(manage);
  $("products").tBodies[0].append(row);
  const option = document.createElement("option");
  option.value = s.id;
  $("manage-sku").append(option);
  const entry = { row, cells, img, title, option };
  rows.set(s.id, entry);
  return entry;
}

/** Sets a cell's text, flashing it when the value changed. */
function setCell(td, text, flash) {
  if (td.textContent === text) return;
  td.textContent = text;
  if (flash) {
    td.classList.remove("changed");
    // Reading offsetWidth restarts the CSS animation on the same element.
    void td.offsetWidth;
    td.classList.add("changed");
  }
}

function renderRow(s, flash) {
  const entry = rows.get(s.id) || makeRow(s);
  const { cells, row } = entry;
  const meta = s.meta;
  if (meta) {
    if (entry.img.getAttribute("src") !== meta.image_url) {
      if (meta.image_url) entry.img.src = meta.image_url;
      else entry.img.removeAttribute("src");
    }
    entry.title.textContent = meta.title;
    entry.option.textContent = `${meta.title} (${s.id})`;
    setCell(cells.price, fmt.price(locale, meta.price_minor, meta.currency), false);
  } else {
    entry.option.textContent = s.id;
  }
  setCell(cells.available, fmt.count(locale, s.available), flash);
  setCell(cells.held, fmt.count(locale, s.held), flash);
  setCell(cells.sold, fmt.count(locale, s.sold), flash);
  setCell(cells.total, fmt.count(locale, s.total), flash);
  setCell(cells.state, describeState(s), flash);
  setCell(cells.limit, s.buyer_limit === 0 ? "—" : fmt.count(locale, s.buyer_limit), flash);
  row.dataset.state = s.sold_out ? "sold_out" : s.state;
  renderRowKpis(s, Date.now());
}

function renderRowKpis(s, now) {
  const k = kpis.sku(s, now);
  const { cells } = rows.get(s.id);
  setCell(cells.rate, fmt.decimal(locale, k.ratePerMin, 1), false);
  setCell(cells.conversion, k.conversion === null ? "—" : fmt.percent(locale, k.conversion), false);
  setCell(cells.abandoned, fmt.count(locale, k.abandoned), false);
  setCell(cells.sellthrough, k.sellThrough === null ? "—" : fmt.percent(locale, k.sellThrough), false);
  setCell(cells.eta, eta(k), false);
}

function eta(k) {
  if (k.etaMin === 0) return "sold out";
  return k.etaMin === null ? "—" : fmt.minutes(locale, k.etaMin);
}

/** Redraws the show KPIs and chart; with `everyRow`, the clock-dependent
 * KPIs of every row too (once a second, not on every frame, so a big
 * catalog does not redraw thousands of rows ten times a second). */
function renderTotals(everyRow) {
  const now = Date.now();
  const states = [...live.skus.values()];
  const k = kpis.total(states, now);
  const sold = states.reduce((n, s) => n + s.sold, 0);
  $("empty").hidden = states.length > 0;
  document.querySelector('[data-kpi="rate"]').textContent = fmt.decimal(locale, k.ratePerMin, 1);
  document.querySelector('[data-kpi="conversion"]').textContent = k.conversion === null ? "—" : fmt.percent(locale, k.conversion);
  document.querySelector('[data-kpi="abandoned"]').textContent = fmt.count(locale, k.abandoned);
  document.querySelector('[data-kpi="sellthrough"]').textContent = k.sellThrough === null ? "—" : fmt.percent(locale, k.sellThrough);
  document.querySelector('[data-kpi="sold"]').textContent = `${fmt.count(locale, sold)} sold`;
  document.querySelector('[data-kpi="eta"]').textContent = eta(k);
  const clock = (ms) => new Date(ms).toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  drawSales($("sales-chart"), kpis.chart(now), (u) => `${fmt.count(locale, u)} sold`, clock);
  if (everyRow) for (const s of states) if (rows.has(s.id)) renderRowKpis(s, now);
}

/** Keeps the manage form's inputs in step with the chosen product. */
function syncManage() {
  const s = live.skus.get(selectedSku());
  if (s) $("limit-qty").value = String(s.buyer_limit);
}

function onSnapshot(states) {
  // The snapshot is the whole topic: drop rows of SKUs that are gone (a
  // gateway restarted without them).
  const ids = new Set(states.map((s) => s.id));
  for (const [id, entry] of rows) {
    if (!ids.has(id)) {
      entry.row.remove();
      entry.option.remove();
      rows.delete(id);
    }
  }
  for (const s of states) renderRow(s, false);
  syncManage();
  renderTotals(true);
}

function onUpdate(changes, tsMs) {
  // The frame's server time, not our receipt time: a burst delivered late
  // still lands in the minute it happened.
  const at = Math.min(Number(tsMs) || Date.now(), Date.now());
  for (const { prev, next } of changes) {
    kpis.observe(prev, next, at);
    renderRow(next, true);
  }
  renderTotals(false);
}

function onStatus(status, detail) {
  const pill = $("conn");
  pill.dataset.status = status;
  pill.textContent = {
    connecting: "connecting…",
    live: "live",
    reconnecting: `reconnecting… (${detail.detail || "offline"})`,
    error: `error: ${detail.detail || "refused"}`,
  }[status];
}

function main() {
  if (show) {
    $("scope").textContent = `show ${show}`;
    $("new-show").value = show;
  }
  document.title = show ? `holdfast · ${show}` : "holdfast · host dashboard";
  live = new Live(topic, {
    onStatus,
    onSnapshot,
    onUpdate,
    onHello: () => {
      // So a token that stopped working while the tab was away is reported
      // before the host tries to use it. Later reconnects do not re-check:
      // an action answered 401 signs out (see `call`).
      if (checkStoredToken) {
        checkStoredToken = false;
        const t = token();
        if (t) verify(t).then((r) => (r.ok ? setSignedIn(true) : signOut(r.text)));
      }
    },
  });
  setSignedIn(Boolean(token()));
  checkStoredToken = Boolean(token());
  $("signin").addEventListener("submit", onSignIn);
  $("signout").addEventListener("click", () => signOut(""));
  $("restock-form").addEventListener("submit", onRestock);
  $("adjust-form").addEventListener("submit", onAdjust);
  $("limit-form").addEventListener("submit", onLimit);
  $("schedule-form").addEventListener("submit", onSchedule);
  $("create-form").addEventListener("submit", onCreate);
  $("manage-sku").addEventListener("change", syncManage);
  for (const b of document.querySelectorAll("[data-window]")) {
    b.addEventListener("click", () => setWindow({ state: b.dataset.window }));
  }
  live.start();
  setInterval(() => renderTotals(true), TICK_MS);
}

main();
