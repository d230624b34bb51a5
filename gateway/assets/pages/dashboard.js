// dashboard.js owns the host dashboard: sign-in, the live product table,
// the show's KPIs and chart, the admin controls (with confirmation for what
// stops sales and undo from the activity log), and the offline state.
//
// Counts come only from the websocket (never from HTTP answers, which could
// be older than a frame already shown). KPIs come only from the server's
// `stats` frames (sent to admin connections): the browser derives no flows,
// so a second tab, a reload and a restart with Redis all show the same
// numbers. Admin actions go through the HTTP API with the bearer token,
// which lives in sessionStorage so it dies with the tab.

import { Live } from "./live.js";
import { drawSales } from "./chart.js";
import * as fmt from "./format.js";

const TOKEN_KEY = "holdfast.admin_token";
/** Entries kept in the activity log. */
const LOG_MAX = 40;
/** An admin call with no answer within this long is reported as failed. */
const CALL_TIMEOUT_MS = 10000;
/** Largest quantity the controls send (the API takes u32; no show needs more). */
const QTY_MAX = 1000000;
/** Restock steps offered on every product row. */
const QUICK_RESTOCK = [1, 5, 10];
/** "Live again" stays this long after the gateway is back. */
const ONLINE_NOTE_MS = 8000;
/** Most bars in the sales chart: longer shows merge neighbouring buckets. */
const CHART_BARS_MAX = 120;
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

/** id -> {row, cells, img, title, option, buttons} of the product table, in
 * the order SKUs appeared. */
const rows = new Map();
/** The latest stats frame (admin connections only), and its SKUs by id. */
let stats = null;
const statsById = new Map();
let live;
/** Whether the gateway is reachable (false while reconnecting). */
let online = true;
let offlineSince = null;
let onlineTimer = null;
/** A manage-panel call in flight (its controls ignore new submissions). */
let busy = false;

const time = (ms) => new Date(ms).toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

function title(id) {
  const s = live.skus.get(id);
  return s && s.meta ? s.meta.title : id;
}

// ----- sign-in ---------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function signedIn() {
  return document.body.dataset.auth === "admin";
}

function setSignedIn(on) {
  $("signin").hidden = on;
  $("session").hidden = !on;
  document.body.dataset.auth = on ? "admin" : "none";
  $("kpi-note").hidden = on;
  syncControls();
  if (on && live) renderCounts();
}

function authMessage(text, kind) {
  const p = $("auth-msg");
  p.textContent = text;
  p.dataset.kind = kind;
  p.hidden = !text;
}

function signOut(reason) {
  const was = signedIn();
  sessionStorage.removeItem(TOKEN_KEY);
  setSignedIn(false);
  authMessage(reason || "", "error");
  clearStats();
  // The connection was made an admin's: a new one is a viewer's again.
  if (was) live.reconnect();
  if (!reason) $("token").focus();
}

/** Asks the gateway who the token belongs to (the protocol's `auth`
 * message), and keeps it only if it is the admin token. On success this
 * connection is an admin's from now on (stats frames follow). */
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
    // The sign-in form is gone: focus where the outcome is said.
    $("session").focus();
  } else {
    const wasIn = signedIn();
    sessionStorage.removeItem(TOKEN_KEY);
    if (wasIn) setSignedIn(false);
    authMessage(result.text, "error");
    input.focus();
  }
}

// ----- online / offline ----------------------------------------------------------

/** A control that lost focus because it was disabled (offline), to focus
 * again when it is back. */
let lostFocus = null;

/** Enables what may be used now: signed in and online. A manage-panel call
 * in flight only marks the panel busy (disabling the focused button would
 * drop focus to the page). */
function syncControls() {
  const usable = signedIn() && online;
  const active = document.activeElement;
  if (!usable && active && active !== document.body && $("data").contains(active)) lostFocus = active;
  $("manage-controls").disabled = !usable;
  $("create-controls").disabled = !usable;
  $("manage-controls").setAttribute("aria-busy", busy ? "true" : "false");
  $("signin-btn").disabled = !online;
  for (const entry of rows.values()) {
    for (const b of entry.buttons) b.disabled = !usable;
  }
  for (const b of document.querySelectorAll("#log button[data-undo]")) b.disabled = !usable || b.dataset.used === "1";
  if (usable && lostFocus) {
    if ((document.activeElement === document.body || !document.activeElement) && lostFocus.isConnected) lostFocus.focus();
    lostFocus = null;
  }
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
  if (status === "reconnecting" && online) {
    online = false;
    offlineSince = Date.now();
    clearTimeout(onlineTimer);
    $("online").hidden = true;
    $("offline-text").textContent =
      `the gateway cannot be reached since ${time(offlineSince)}. The numbers below are from then and may be out of date; actions are disabled until it is back.`;
    $("offline").hidden = false;
    document.body.dataset.offline = "1";
    logEntry({ text: "Gateway offline: numbers frozen, actions disabled", kind: "error" });
    syncControls();
  } else if (status === "live" && !online) {
    online = true;
    $("offline").hidden = true;
    delete document.body.dataset.offline;
    const note = $("online");
    note.textContent = `Live again since ${time(Date.now())}: counts and statistics are current.`;
    note.hidden = false;
    clearTimeout(onlineTimer);
    onlineTimer = setTimeout(() => (note.hidden = true), ONLINE_NOTE_MS);
    logEntry({ text: `Gateway back after ${Math.round((Date.now() - offlineSince) / 1000)} s`, kind: "ok" });
    syncControls();
  }
}

// ----- activity log ----------------------------------------------------------------

/** Adds an entry at the top of the activity log; `undo` ({label, run}) adds
 * a button that can be used once. */
function logEntry({ text, kind, undo }) {
  const li = document.createElement("li");
  li.dataset.outcome = kind || "info";
  const t = document.createElement("time");
  t.textContent = time(Date.now());
  const span = document.createElement("span");
  span.textContent = ` ${text}`;
  li.append(t, span);
  if (undo) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "quiet small";
    b.dataset.undo = "1";
    b.textContent = undo.label;
    b.setAttribute("aria-label", `${undo.label} (${text})`);
    b.disabled = !(signedIn() && online);
    b.addEventListener("click", async () => {
      if (b.dataset.used === "1") return;
      b.dataset.used = "1";
      b.disabled = true;
      const ok = await undo.run();
      if (ok) {
        b.textContent = "Undone";
        li.dataset.undone = "1";
      } else {
        delete b.dataset.used;
        b.disabled = false;
      }
      b.focus();
    });
    li.append(" ", b);
  }
  const log = $("log");
  log.prepend(li);
  while (log.children.length > LOG_MAX) log.lastElementChild.remove();
  return li;
}

/** Shows an action's outcome next to its controls and in the log. */
function report(target, ok, text, undo) {
  const p = $(target);
  p.hidden = false;
  p.textContent = (ok ? "✓ " : "✗ ") + text;
  p.dataset.outcome = ok ? "ok" : "error";
  logEntry({ text: p.textContent, kind: ok ? "ok" : "error", undo: ok ? undo : undefined });
}

// ----- confirmation ------------------------------------------------------------------

/** Asks before an action that stops sales or removes stock. Resolves true
 * to go ahead; focus returns to where it was. */
function confirmAction(heading, text, okLabel) {
  const dialog = $("confirm");
  const back = document.activeElement;
  $("confirm-title").textContent = heading;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    const done = (yes) => {
      $("confirm-ok").onclick = null;
      $("confirm-cancel").onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      if (back && back.isConnected) back.focus();
      resolve(yes);
    };
    $("confirm-ok").onclick = () => done(true);
    $("confirm-cancel").onclick = () => done(false);
    dialog.onclose = () => done(false); // Escape
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

// ----- admin calls -------------------------------------------------------------

/** One admin request. Resolves with the JSON answer, or null after
 * reporting the error (HTTP status, the API's stable code and message). */
async function call(target, method, path, body) {
  const t = token();
  if (!t) {
    report(target, false, "Sign in with the admin token first.");
    return null;
  }
  if (!online) {
    report(target, false, "The gateway is offline: nothing was sent.");
    return null;
  }
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), CALL_TIMEOUT_MS);
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
  }
}

/** Runs a manage-panel action once at a time, keeping focus where it was. */
async function guarded(action) {
  if (busy) return;
  busy = true;
  const focused = document.activeElement;
  syncControls();
  try {
    await action();
  } finally {
    busy = false;
    syncControls();
    if (document.activeElement === document.body && focused && focused.isConnected) focused.focus();
  }
}

function skuPath(id, tail) {
  return `/api/admin/skus/${encodeURIComponent(id)}${tail}`;
}

const counts = (s) => `${fmt.count(locale, s.available)} available of ${fmt.count(locale, s.total)}`;

async function restock(id, n, target = "action-result") {
  const s = await call(target, "POST", skuPath(id, "/restock"), { qty: n });
  if (s) {
    report(target, true, `Restocked ${title(id)} by ${fmt.count(locale, n)}: ${counts(s)}.`, {
      label: `Undo: remove ${fmt.count(locale, n)}`,
      run: () => adjust(id, n, target, false),
    });
  }
  return Boolean(s);
}

async function adjust(id, n, target = "action-result", undoable = true) {
  const s = await call(target, "POST", skuPath(id, "/adjust"), { qty: n });
  if (s) {
    report(
      target,
      true,
      `Removed ${fmt.count(locale, n)} from ${title(id)}: ${counts(s)}.`,
      undoable ? { label: `Undo: restock ${fmt.count(locale, n)}`, run: () => restock(id, n, target) } : undefined,
    );
  }
  return Boolean(s);
}

/** The window a state is in, as the API takes it. */
function windowOf(s) {
  return s.state === "scheduled" ? { state: "scheduled", opens_at_ms: s.opens_at_ms } : { state: s.state };
}

async function setWindow(id, win, target = "action-result") {
  const before = live.skus.get(id);
  const s = await call(target, "POST", skuPath(id, "/window"), win);
  if (s) {
    const prev = before ? windowOf(before) : null;
    const undo =
      prev && prev.state !== win.state
        ? { label: prev.state === "open" ? "Undo: reopen" : `Undo: back to ${prev.state}`, run: () => setWindow(id, prev, target) }
        : undefined;
    report(target, true, `${title(id)}: sale ${describeState(s)}.`, undo);
  }
  return Boolean(s);
}

/** Changes the sale window, asking first when that stops sales. */
async function windowAction(id, state, target) {
  if (state === "closed" || state === "paused") {
    const verb = state === "closed" ? "Close" : "Pause";
    const ok = await confirmAction(
      `${verb} the sale of ${title(id)}?`,
      state === "closed"
        ? "Buyers can no longer reserve it. Holds already in carts can still be paid. You can undo this from the activity log."
        : "Buyers cannot reserve it until you open it again. Holds already in carts can still be paid.",
      `${verb} sale`,
    );
    if (!ok) return false;
  }
  return setWindow(id, { state }, target);
}

function selectedSku() {
  return $("manage-sku").value;
}

function qty(input, min) {
  const n = Number(input.value);
  if (!Number.isInteger(n) || n < min || n > QTY_MAX) return null;
  return n;
}

function onRestock(ev) {
  ev.preventDefault();
  guarded(async () => {
    const id = selectedSku();
    const n = qty($("restock-qty"), 1);
    if (!id || n === null) return report("action-result", false, `Restock needs a product and 1–${QTY_MAX} units.`);
    await restock(id, n);
  });
}

function onAdjust(ev) {
  ev.preventDefault();
  guarded(async () => {
    const id = selectedSku();
    const n = qty($("adjust-qty"), 1);
    if (!id || n === null) return report("action-result", false, `Adjust needs a product and 1–${QTY_MAX} units.`);
    const ok = await confirmAction(
      `Remove ${fmt.count(locale, n)} from ${title(id)}?`,
      "Available units are taken off sale (units in carts and sold ones are not touched). You can undo this from the activity log.",
      `Remove ${fmt.count(locale, n)}`,
    );
    if (ok) await adjust(id, n);
  });
}

function onLimit(ev) {
  ev.preventDefault();
  guarded(async () => {
    const id = selectedSku();
    const n = qty($("limit-qty"), 0);
    if (!id || n === null) return report("action-result", false, `The limit must be 0–${QTY_MAX}.`);
    const s = await call("action-result", "PATCH", skuPath(id, ""), { buyer_limit: n });
    if (s) report("action-result", true, s.buyer_limit === 0 ? `${title(id)}: no per-buyer limit.` : `${title(id)}: at most ${fmt.count(locale, s.buyer_limit)} per buyer.`);
  });
}

function onSchedule(ev) {
  ev.preventDefault();
  guarded(async () => {
    const at = new Date($("schedule-at").value).getTime();
    if (!Number.isFinite(at)) return report("action-result", false, "Pick a date and time to open the sale.");
    await setWindow(selectedSku(), { state: "scheduled", opens_at_ms: at });
  });
}

function onEdit(ev) {
  ev.preventDefault();
  guarded(async () => {
    const id = selectedSku();
    const s = live.skus.get(id);
    if (!s || !s.meta) return report("action-result", false, "Choose a product first.");
    const currency = s.meta.currency;
    const priceMinor = fmt.parsePrice($("edit-price").value, currency);
    if (priceMinor === null) return report("action-result", false, `The price must be a number like 249.00 (in ${currency}).`);
    const next = { title: $("edit-title").value.trim(), price_minor: priceMinor, image_url: $("edit-image").value.trim() };
    const prev = { title: s.meta.title, price_minor: s.meta.price_minor, image_url: s.meta.image_url };
    const r = await call("action-result", "PATCH", skuPath(id, ""), next);
    if (r) {
      report("action-result", true, `Saved ${r.meta.title}: ${fmt.price(locale, r.meta.price_minor, r.meta.currency)}.`, {
        label: "Undo: restore the previous title, price and image",
        run: async () => {
          const back = await call("action-result", "PATCH", skuPath(id, ""), prev);
          if (back) report("action-result", true, `Restored ${back.meta.title}: ${fmt.price(locale, back.meta.price_minor, back.meta.currency)}.`);
          return Boolean(back);
        },
      });
    }
  });
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
  const focused = document.activeElement;
  const s = await call("create-result", "POST", "/api/admin/skus", def);
  if (s) {
    report("create-result", true, `Created ${s.id} with ${fmt.count(locale, s.total)} units (${describeState(s)}).`);
    $("new-id").value = "";
  }
  if (document.activeElement === document.body && focused) focused.focus();
}

// ----- the table ---------------------------------------------------------------

/** A SKU's sale and stock in words: sold out only when nothing is left or
 * held; units in carts may come back. */
function describeState(s) {
  if (s.state === "closed") return "closed";
  if (s.available === 0 && s.held === 0) {
    const st = statsById.get(s.id);
    return st && st.sold_out_at_ms ? `sold out ${time(st.sold_out_at_ms)}` : "sold out";
  }
  if (s.available === 0) return "all in carts";
  switch (s.state) {
    case "scheduled":
      return s.opens_at_ms ? `opens ${fmt.when(locale, s.opens_at_ms)}` : "scheduled";
    default:
      return s.state;
  }
}

function rowState(s) {
  if (s.state === "closed") return "closed";
  if (s.available === 0 && s.held === 0) return "sold_out";
  if (s.available === 0) return "in_carts";
  return s.state;
}

const COLUMNS = [
  "image", "product", "price", "available", "held", "sold", "state",
  "revenue", "rate", "conversion", "eta", "actions",
];
const LABELS = {
  price: "Price", available: "Available", held: "In carts", sold: "Sold", state: "Sale",
  revenue: "Revenue", rate: "Sold/min", conversion: "Conv.", eta: "Sell-out in",
};
const NUMERIC = new Set(["price", "available", "held", "sold", "revenue", "rate", "conversion", "eta"]);

function button(text, label, onClick, cls) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.className = cls || "quiet small";
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

function makeRow(s) {
  const row = document.createElement("tr");
  row.dataset.sku = s.id;
  const cells = {};
  for (const col of COLUMNS) {
    const td = document.createElement(col === "product" ? "th" : "td");
    if (col === "product") td.scope = "row";
    td.dataset.col = col;
    if (LABELS[col]) td.dataset.label = LABELS[col];
    if (NUMERIC.has(col)) td.classList.add("num");
    cells[col] = td;
    row.append(td);
  }
  const img = document.createElement("img");
  img.alt = "";
  img.width = 40;
  img.height = 40;
  img.loading = "lazy";
  img.hidden = true;
  img.addEventListener("error", () => (img.hidden = true));
  cells.image.append(img);
  const name = document.createElement("span");
  name.className = "title";
  const id = document.createElement("span");
  id.className = "id";
  id.textContent = s.id;
  cells.product.append(name, id);
  const held = document.createElement("span");
  held.className = "v";
  const soon = document.createElement("span");
  soon.className = "soon";
  cells.held.append(held, soon);
  const quick = document.createElement("div");
  quick.className = "quick";
  const buttons = [];
  for (const n of QUICK_RESTOCK) {
    buttons.push(button(`+${n}`, "", () => restock(s.id, n)));
  }
  const toggle = button("Pause", "", () => {
    const cur = live.skus.get(s.id);
    windowAction(s.id, cur && cur.state === "open" ? "paused" : "open");
  });
  toggle.classList.add("toggle");
  buttons.push(toggle);
  const manage = button("Manage", "", () => openManage(s.id), "quiet small manage");
  buttons.push(manage);
  quick.append(...buttons);
  cells.actions.append(quick);
  $("products").tBodies[0].append(row);
  const option = document.createElement("option");
  option.value = s.id;
  $("manage-sku").append(option);
  const entry = { row, cells, img, title: name, held, soon, option, buttons, toggle, manage };
  rows.set(s.id, entry);
  const usable = signedIn() && online;
  for (const b of buttons) b.disabled = !usable;
  return entry;
}

/** Selects a product in the manage panel and moves focus there. */
function openManage(id) {
  $("manage-sku").value = id;
  syncManage(true);
  const heading = $("manage-h");
  heading.scrollIntoView({ behavior: "instant", block: "start" });
  heading.focus({ preventScroll: true });
}

function flashCell(td) {
  td.classList.remove("changed");
  // Reading offsetWidth restarts the CSS animation on the same element.
  void td.offsetWidth;
  td.classList.add("changed");
}

/** Sets a cell's text, flashing it when the value changed. */
function setCell(td, text, flash) {
  if (td.textContent === text) return;
  td.textContent = text;
  td.title = text;
  if (flash) flashCell(td);
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function renderRow(s, flash) {
  const entry = rows.get(s.id) || makeRow(s);
  const { cells, row } = entry;
  const meta = s.meta;
  const name = meta ? meta.title : s.id;
  if (meta) {
    if ((entry.img.getAttribute("src") || "") !== meta.image_url) {
      entry.img.hidden = !meta.image_url;
      if (meta.image_url) entry.img.src = meta.image_url;
      else entry.img.removeAttribute("src");
    }
    setText(entry.title, meta.title);
    entry.title.title = meta.title;
    setText(entry.option, `${meta.title} (${s.id})`);
    setCell(cells.price, fmt.price(locale, meta.price_minor, meta.currency), flash);
  } else {
    setText(entry.option, s.id);
  }
  const [plus1, plus5, plus10] = entry.buttons;
  plus1.setAttribute("aria-label", `Restock ${name} by 1`);
  plus5.setAttribute("aria-label", `Restock ${name} by 5`);
  plus10.setAttribute("aria-label", `Restock ${name} by 10`);
  entry.manage.setAttribute("aria-label", `Manage ${name}`);
  const open = s.state === "open";
  setText(entry.toggle, open ? "Pause" : "Open");
  entry.toggle.setAttribute("aria-label", `${open ? "Pause" : "Open"} the sale of ${name}`);
  entry.toggle.classList.toggle("danger-text", open);
  setCell(cells.available, fmt.count(locale, s.available), flash);
  const heldText = fmt.count(locale, s.held);
  if (entry.held.textContent !== heldText) {
    entry.held.textContent = heldText;
    if (flash) flashCell(cells.held);
  }
  setCell(cells.sold, fmt.count(locale, s.sold), flash);
  setCell(cells.state, describeState(s), flash);
  row.dataset.state = rowState(s);
  renderRowStats(s.id);
}

const dash = "—";

function conversion(st) {
  const ended = st.sold_units + st.returned_units + st.released_units + st.expired_units;
  return ended > 0 ? fmt.percent(locale, st.sold_units / ended) : dash;
}

function ratePerMin(st) {
  return st.window_ms > 0 ? (st.sold_in_window * 60000) / st.window_ms : 0;
}

function revenue(list) {
  if (!list || list.length === 0) return dash;
  return list.map((m) => fmt.price(locale, m.minor, m.currency)).join(" + ");
}

/** Sell-out estimate: the server says "—" (null) until it has enough data
 * and for products that sell nothing. */
function eta(ms, s) {
  if (ms === null || ms === undefined) return dash;
  if (ms === 0) return s && s.available === 0 && s.held > 0 ? "in carts" : "sold out";
  return fmt.minutes(locale, ms / 60000);
}

function renderRowStats(id) {
  const entry = rows.get(id);
  if (!entry) return;
  const { cells } = entry;
  const st = statsById.get(id);
  const s = live.skus.get(id);
  if (!st) {
    for (const col of ["revenue", "rate", "conversion", "eta"]) setCell(cells[col], dash, false);
    setText(entry.soon, "");
    return;
  }
  setCell(cells.revenue, revenue(st.revenue), false);
  setCell(cells.rate, fmt.decimal(locale, ratePerMin(st), 1), false);
  setCell(cells.conversion, conversion(st), false);
  setCell(cells.eta, eta(st.sellout_eta_ms, s), false);
  setText(entry.soon, st.expiring_soon_units > 0 ? `${fmt.count(locale, st.expiring_soon_units)} < 1 min` : "");
}

function kpi(name, text) {
  const el = document.querySelector(`[data-kpi="${name}"]`);
  if (el.textContent !== text) {
    el.textContent = text;
    el.title = text;
  }
}

/** Totals that follow the live counts (the same frames in every tab). */
function renderCounts() {
  const states = [...live.skus.values()];
  $("empty").hidden = states.length > 0;
  const sold = states.reduce((n, s) => n + s.sold, 0);
  const total = states.reduce((n, s) => n + s.total, 0);
  const held = states.reduce((n, s) => n + s.held, 0);
  if (!signedIn()) return;
  kpi("sold", fmt.count(locale, sold));
  kpi("sellthrough", `sell-through ${total > 0 ? fmt.percent(locale, sold / total) : dash}`);
  kpi("carts", fmt.count(locale, held));
}

function clearStats() {
  stats = null;
  delete document.body.dataset.statsSeq;
  statsById.clear();
  for (const name of ["revenue", "sold", "rate", "conversion", "carts", "abandoned", "eta"]) kpi(name, dash);
  kpi("sellthrough", `sell-through ${dash}`);
  kpi("expiring", `${dash} expire within 1 min`);
  for (const id of rows.keys()) renderRowStats(id);
  drawChart();
}

function onStats(msg) {
  stats = msg;
  // Which frame the numbers are from (tests compare tabs by it).
  document.body.dataset.statsSeq = String(msg.seq);
  statsById.clear();
  for (const st of msg.skus) statsById.set(st.id, st);
  const t = msg.total;
  kpi("revenue", revenue(t.revenue));
  kpi("rate", fmt.decimal(locale, ratePerMin(t), 1));
  kpi("rate-hint", t.window_ms >= 300000 ? "last 5 min" : `since the first order (${fmt.minutes(locale, t.window_ms / 60000)})`);
  kpi("conversion", conversion(t));
  kpi("expiring", `${fmt.count(locale, t.expiring_soon_units)} expire within 1 min`);
  kpi("abandoned", fmt.count(locale, t.expired_units + t.released_units));
  kpi("abandoned-hint", `${fmt.count(locale, t.expired_units)} expired, ${fmt.count(locale, t.released_units)} released`);
  kpi("eta", eta(t.sellout_eta_ms, null));
  renderCounts();
  for (const id of rows.keys()) {
    renderRowStats(id);
    // "sold out HH:MM:SS" needs the time from the stats.
    const s = live.skus.get(id);
    if (s) setCell(rows.get(id).cells.state, describeState(s), false);
  }
  drawChart();
}

/** Sales buckets merged into at most CHART_BARS_MAX bars. */
function bars(sales, startMs, bucketMs) {
  const merge = Math.max(1, Math.ceil(sales.length / CHART_BARS_MAX));
  const out = [];
  for (let i = 0; i < sales.length; i += merge) {
    out.push({ start: startMs + i * bucketMs, units: sales.slice(i, i + merge).reduce((a, b) => a + b, 0) });
  }
  return { out, per: (merge * bucketMs) / 1000 };
}

/** The channel breakdown from the server's statistics (Stats.channels):
 * per channel, conversion (holds committed of holds reserved, units sold of
 * units reserved) and its sales over time in the show's buckets. */
function renderChannelSales() {
  const list = $("channel-sales");
  const channels = stats && Array.isArray(stats.channels) ? stats.channels : [];
  if (!channels.length) {
    list.replaceChildren();
    return;
  }
  const items = channels.map((c) => {
    const li = document.createElement("li");
    li.dataset.channel = c.id;
    const pct = (a, b) => (b ? `${Math.round((100 * a) / b)} %` : dash);
    const head = document.createElement("p");
    head.className = "channel-conv";
    head.dataset.committed = String(c.committed_holds);
    head.dataset.reserved = String(c.reserved_holds);
    head.textContent =
      `${c.id}: ${fmt.count(locale, c.committed_holds)} of ${fmt.count(locale, c.reserved_holds)} holds bought ` +
      `(${pct(c.committed_holds, c.reserved_holds)}), ${fmt.count(locale, c.sold_units)} of ` +
      `${fmt.count(locale, c.reserved_units)} units`;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("role", "img");
    svg.classList.add("channel-chart");
    const total = c.sales.reduce((a, b) => a + b, 0);
    svg.dataset.total = String(total);
    li.append(head, svg);
    return { li, svg, c, total };
  });
  list.replaceChildren(...items.map((i) => i.li));
  for (const { svg, c, total } of items) {
    const { out, per } = bars(c.sales.length ? c.sales : [0], stats.sales_start_ms, stats.bucket_ms);
    svg.setAttribute("aria-label", `${c.id}: ${fmt.count(locale, total)} units sold since ${time(stats.sales_start_ms)}, in bars of ${per} seconds`);
    drawSales(svg, out, (u) => `${fmt.count(locale, u)} sold`, time);
  }
}

function drawChart() {
  renderChannelSales();
  const svg = $("sales-chart");
  if (!stats || stats.sales.length === 0) {
    drawSales(svg, [{ start: Date.now(), units: 0 }], (u) => `${fmt.count(locale, u)} sold`, time);
    svg.dataset.total = "0";
    return;
  }
  const merge = Math.max(1, Math.ceil(stats.sales.length / CHART_BARS_MAX));
  const bars = [];
  for (let i = 0; i < stats.sales.length; i += merge) {
    const units = stats.sales.slice(i, i + merge).reduce((a, b) => a + b, 0);
    bars.push({ start: stats.sales_start_ms + i * stats.bucket_ms, units });
  }
  const per = (merge * stats.bucket_ms) / 1000;
  setText($("chart-scale"), `units per ${per < 60 ? `${per} s` : `${per / 60} min`}, whole show`);
  const total = stats.sales.reduce((a, b) => a + b, 0);
  svg.dataset.total = String(total);
  svg.setAttribute("aria-label", `${fmt.count(locale, total)} units sold since ${time(stats.sales_start_ms)}, in bars of ${per} seconds`);
  drawSales(svg, bars, (u) => `${fmt.count(locale, u)} sold`, time);
}

/** Keeps the manage form's inputs in step with the chosen product
 * (`all`: the edit fields too, when the choice changes). */
function syncManage(all) {
  const id = selectedSku();
  const s = live.skus.get(id);
  setText($("manage-h"), s ? `Manage ${title(id)}` : "Manage a product");
  if (!s || !all) return;
  $("limit-qty").value = String(s.buyer_limit);
  if (s.meta) {
    $("edit-title").value = s.meta.title;
    $("edit-price").value = fmt.decimal("en", s.meta.price_minor / 10 ** fmt.currencyDigits(s.meta.currency), fmt.currencyDigits(s.meta.currency)).replace(/,/g, "");
    $("edit-image").value = s.meta.image_url;
  }
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
  const first = $("manage-sku").options.length === 0;
  for (const s of states) renderRow(s, false);
  syncManage(first);
  renderCounts();
  renderChannels();
}

function onUpdate(changes) {
  for (const { next } of changes) renderRow(next, true);
  renderCounts();
  syncManage(false);
  renderChannels();
}

// ----- sales channels ----------------------------------------------------------------

/** Most channel columns: a SKU has at most 8 channels (CHANNELS_MAX); a
 * show's SKUs may name more between them. */
const CHANNEL_COLUMNS_MAX = 16;

/** Per-channel columns for the SKUs with channels (counts from the
 * gateway's SkuState.channels, docs/CHANNELS.md), and a totals row: units
 * in carts and sold per channel, and its share of the channel's units
 * reserved and still held or sold. Hidden while no SKU has a channel. */
function renderChannels() {
  const withChannels = [...live.skus.values()].filter((s) => Array.isArray(s.channels) && s.channels.length);
  $("channels").hidden = withChannels.length === 0;
  if (!withChannels.length) return;
  const ids = [...new Set(withChannels.flatMap((s) => s.channels.map((c) => c.id)))].sort().slice(0, CHANNEL_COLUMNS_MAX);
  const key = ids.join(",");
  const head = $("channels-head");
  if (head.dataset.key !== key) {
    head.dataset.key = key;
    const top = document.createElement("tr");
    const sub = document.createElement("tr");
    const th = (row, text, attrs) => {
      const el = document.createElement("th");
      el.textContent = text;
      Object.assign(el, attrs);
      row.append(el);
      return el;
    };
    th(top, "Product", { scope: "col", rowSpan: 2 });
    for (const id of ids) th(top, id, { scope: "colgroup", colSpan: 3, className: "ch-group" });
    for (const id of ids) {
      for (const [label, sr] of [["Avail.", "available"], ["Carts", "in carts"], ["Sold", "sold"]]) {
        const el = th(sub, label, { scope: "col", className: "num" });
        el.setAttribute("aria-label", `${id}: ${sr}`);
      }
    }
    head.replaceChildren(top, sub);
  }
  const cell = (row, text, attrs) => {
    const td = document.createElement("td");
    td.className = "num";
    td.textContent = text;
    Object.assign(td.dataset, attrs);
    row.append(td);
  };
  const totals = new Map(ids.map((id) => [id, { held: 0, sold: 0 }]));
  const rowsOut = withChannels
    .sort((a, b) => a.id.localeCompare(b.id))
    .map((s) => {
      const tr = document.createElement("tr");
      tr.dataset.sku = s.id;
      const name = document.createElement("th");
      name.scope = "row";
      name.textContent = s.meta ? s.meta.title : s.id;
      tr.append(name);
      for (const id of ids) {
        const c = s.channels.find((x) => x.id === id);
        if (c) {
          totals.get(id).held += c.held;
          totals.get(id).sold += c.sold;
        }
        for (const col of ["available", "held", "sold"]) {
          cell(tr, c ? fmt.count(locale, c[col]) : dash, { channel: id, col });
        }
      }
      return tr;
    });
  $("channels-body").replaceChildren(...rowsOut);
  const foot = document.createElement("tr");
  const label = document.createElement("th");
  label.scope = "row";
  label.textContent = "All (sold of held + sold)";
  foot.append(label);
  for (const id of ids) {
    const t = totals.get(id);
    cell(foot, "", { channel: id, col: "available" });
    cell(foot, fmt.count(locale, t.held), { channel: id, col: "held" });
    const share = t.held + t.sold ? ` (${Math.round((100 * t.sold) / (t.held + t.sold))} %)` : "";
    cell(foot, `${fmt.count(locale, t.sold)}${share}`, { channel: id, col: "sold" });
  }
  $("channels-foot").replaceChildren(foot);
}

function onStockEvent(sku, event, tsMs) {
  const what = event === "sold_out" ? "sold out" : "is back in stock";
  logEntry({ text: `${title(sku)} ${what} (${time(tsMs || Date.now())})`, kind: event === "sold_out" ? "stock" : "ok" });
}

// ----- nodes (multi-node deployments) ---------------------------------------------

/** How often the nodes panel asks `/api/admin/cluster` while signed in. */
const NODES_EVERY_MS = 2000;

/** A node's state as the host reads it. */
function nodeState(n) {
  if (n.adopted_by != null) return `down, adopted by node ${n.adopted_by}`;
  return n.alive ? "alive" : "down";
}

/** Draws the nodes panel: one column per node (its state in the header),
 * one row per product (the pool, then the units each node holds leased). */
function renderNodes(view) {
  const head = $("nodes-head");
  head.replaceChildren();
  const th = (text, cls) => {
    const c = document.createElement("th");
    c.scope = "col";
    c.textContent = text;
    if (cls) c.className = cls;
    head.append(c);
  };
  th("Product");
  th("Pool");
  for (const n of view.nodes) th(`Node ${n.id}${n.this ? " (this one)" : ""}: ${nodeState(n)}`, n.alive ? "node-up" : "node-down");
  const body = $("nodes-body");
  body.replaceChildren();
  for (const s of view.skus) {
    const tr = document.createElement("tr");
    tr.dataset.sku = s.id;
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = s.frozen ? `${title(s.id)} (frozen: stock records lost in a failover)` : title(s.id);
    tr.append(name);
    const cell = (text) => {
      const td = document.createElement("td");
      td.className = "num";
      td.textContent = text;
      tr.append(td);
    };
    cell(String(s.pool));
    for (const n of view.nodes) cell(String(s.leased[n.id] || 0));
    body.append(tr);
  }
  const alive = view.nodes.filter((n) => n.alive).length;
  $("nodes-note").textContent = `${alive} of ${view.nodes.length} alive`;
}

/** Polls the deployment's nodes while signed in and online; a gateway that
 * is a single node (no nodes listed) hides the panel for good. */
async function pollNodes() {
  if (!signedIn() || !online) return;
  try {
    const r = await fetch("/api/admin/cluster", { headers: { Authorization: `Bearer ${token()}` }, cache: "no-store" });
    if (!r.ok) return;
    const view = await r.json();
    if (view.nodes.length === 0) {
      nodesWanted = false;
      $("nodes").hidden = true;
      return;
    }
    $("nodes").hidden = false;
    renderNodes(view);
  } catch {
    // Offline: the banner says so; the next poll tries again.
  }
}

let nodesWanted = true;

// ----- webhooks --------------------------------------------------------------------

/** How often the webhooks panel asks `/api/admin/webhooks` while signed in. */
const WEBHOOKS_EVERY_MS = 2000;
/** Most dead letters listed (the gateway keeps at most
 * `--webhook-dead-letters-max`, 1 000 by default). */
const DEAD_SHOWN_MAX = 200;
let webhooksWanted = true;
/** Whether `/metrics` is served on this port (not `--metrics-listen`). */
let metricsHere = true;
/** The endpoint whose dead letters are open, or null. */
let deadOf = null;

/** Delivered and failed tries per endpoint, from the gateway's Prometheus
 * text (`holdfast_webhook_deliveries_total{endpoint,outcome}`), or an empty
 * map when `/metrics` is served elsewhere (`--metrics-listen`). */
async function deliveryCounts() {
  const out = new Map();
  if (!metricsHere) return out;
  try {
    const r = await fetch("/metrics", { cache: "no-store" });
    if (r.status === 404) metricsHere = false; // --metrics-listen: not asked again
    if (!r.ok) return out;
    for (const line of (await r.text()).split("\n")) {
      if (!line.startsWith("holdfast_webhook_deliveries_total{")) continue;
      const ep = /endpoint="([^"]*)"/.exec(line);
      const outcome = /outcome="([^"]*)"/.exec(line);
      const n = Number(line.slice(line.lastIndexOf(" ") + 1));
      if (!ep || !outcome || !Number.isFinite(n)) continue;
      const entry = out.get(ep[1]) || {};
      entry[outcome[1]] = (entry[outcome[1]] || 0) + n;
      out.set(ep[1], entry);
    }
  } catch {
    // No metrics: the columns say "—".
  }
  return out;
}

function renderWebhooks(endpoints, delivered) {
  const body = $("webhooks-body");
  const keep = new Set(endpoints.map((e) => e.id));
  for (const tr of [...body.children]) if (!keep.has(tr.dataset.endpoint)) tr.remove();
  for (const ep of endpoints) {
    let tr = body.querySelector(`tr[data-endpoint="${CSS.escape(ep.id)}"]`);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.endpoint = ep.id;
      const name = document.createElement("th");
      name.scope = "row";
      name.dataset.col = "endpoint";
      const strong = document.createElement("strong");
      strong.textContent = ep.id;
      const url = document.createElement("div");
      url.className = "sub url";
      name.append(strong, url);
      tr.append(name);
      for (const col of ["queued", "retrying", "in_flight", "delivered", "failed", "dead_letters"]) {
        const td = document.createElement("td");
        td.className = "num";
        td.dataset.col = col;
        tr.append(td);
      }
      const actions = document.createElement("td");
      actions.className = "actions";
      actions.append(
        button("Dead letters", `Show the dead letters of ${ep.id}`, () => openDead(ep.id), "quiet show-dead"),
        button("Replay dead letters", `Replay the dead letters of ${ep.id}`, () => replayDead(ep.id), "replay-dead"),
      );
      tr.append(actions);
      body.append(tr);
    }
    tr.querySelector(".url").textContent = ep.url;
    // Metrics appear with an endpoint's first try; none yet is 0, no
    // metrics at all (`--metrics-listen`) is "—".
    const d = delivered.get(ep.id) || (delivered.size ? {} : null);
    const cells = {
      queued: ep.queue.queued,
      retrying: ep.queue.retrying,
      in_flight: ep.queue.in_flight,
      delivered: d ? d.delivered || 0 : undefined,
      // A try that failed is counted as `failed`, or `dead_letter` when
      // it was the last one.
      failed: d ? (d.failed || 0) + (d.dead_letter || 0) : undefined,
      dead_letters: ep.queue.dead_letters,
    };
    for (const [col, v] of Object.entries(cells)) {
      setText(tr.querySelector(`[data-col="${col}"]`), v === undefined ? dash : fmt.count(locale, v));
    }
    tr.classList.toggle("has-dead", ep.queue.dead_letters > 0);
  }
  $("webhooks-note").textContent = `${endpoints.length} endpoint${endpoints.length === 1 ? "" : "s"}`;
}

/** Polls the endpoints while signed in and online; a gateway without
 * webhooks (404) hides the panel for good. */
async function pollWebhooks() {
  if (!signedIn() || !online) return;
  try {
    const r = await fetch("/api/admin/webhooks", { headers: { Authorization: `Bearer ${token()}` }, cache: "no-store" });
    if (r.status === 404) {
      webhooksWanted = false;
      $("webhooks").hidden = true;
      return;
    }
    if (!r.ok) return;
    const view = await r.json();
    $("webhooks").hidden = false;
    renderWebhooks(view.endpoints, await deliveryCounts());
    if (deadOf) await loadDead(deadOf);
  } catch {
    // Offline: the banner says so; the next poll tries again.
  }
}

/** A `datetime-local` value (local time, whole seconds). */
function localInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

async function openDead(id) {
  if (deadOf !== id) {
    // The last hour, to the second: the usual "replay what the outage lost".
    $("replay-from").value = localInput(Date.now() - 3600 * 1000);
    $("replay-to").value = localInput(Date.now());
  }
  deadOf = id;
  $("dead-ep").textContent = id;
  $("dead").hidden = false;
  await loadDead(id);
  $("dead-h").focus();
}

async function loadDead(id) {
  const r = await fetch(`/api/admin/webhooks/${encodeURIComponent(id)}/dead-letters`, {
    headers: { Authorization: `Bearer ${token()}` },
    cache: "no-store",
  });
  if (!r.ok || deadOf !== id) return;
  const { dead_letters: dead } = await r.json();
  const list = $("dead-list");
  const items = dead.slice(0, DEAD_SHOWN_MAX).map((d) => {
    const li = document.createElement("li");
    li.dataset.event = d.event.id;
    const what = document.createElement("span");
    what.textContent = `${d.event.type} · ${time(d.event.ts_ms)} · ${d.tries} tries · ${d.error}`;
    li.append(
      what,
      button("Replay", `Replay event ${d.event.type} of ${time(d.event.ts_ms)}`, () => replayOne(id, d.event), "quiet replay-one"),
    );
    return li;
  });
  // Redrawn only when the list changed: a focused Replay button stays.
  const ids = dead.slice(0, DEAD_SHOWN_MAX).map((d) => d.event.id).join(",");
  if (list.dataset.ids !== ids) {
    list.replaceChildren(...items);
    list.dataset.ids = ids;
  }
  $("dead-empty").hidden = dead.length > 0;
}

async function replay(id, body, what) {
  const ok = await confirmAction(`Replay ${what}?`, `The endpoint ${id} gets ${what} again, with the same webhook-id (receivers dedupe by it).`, "Replay");
  if (!ok) return;
  const answer = await call("webhook-result", "POST", `/api/admin/webhooks/${encodeURIComponent(id)}/replay`, body);
  if (answer) report("webhook-result", true, `${id}: ${fmt.count(locale, answer.replayed)} replayed (${what})`);
  await pollWebhooks();
}

const replayDead = (id) => replay(id, { dead_letters: true }, "its dead letters");
const replayOne = (id, event) => replay(id, { event_ids: [event.id] }, `event ${event.type} of ${time(event.ts_ms)}`);

function onReplayRange(ev) {
  ev.preventDefault();
  const from = Date.parse($("replay-from").value);
  const to = Date.parse($("replay-to").value);
  if (!deadOf || !Number.isFinite(from) || !Number.isFinite(to) || from > to) {
    report("webhook-result", false, "Give a time range whose start is not after its end.");
    return;
  }
  // The inputs have whole seconds: the end covers its whole second.
  replay(deadOf, { from_ms: from, to_ms: to + 999 }, `the events from ${time(from)} to ${time(to)}`);
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
    onStats,
    onStockEvent,
    // Every (re)connect presents the tab's token first, so the connection
    // is an admin's and gets the stats frames; a token the gateway stopped
    // accepting (a restart with a new one) is reported before the host
    // tries to use it.
    token: () => (signedIn() ? token() : null),
    onAuth: (answer) => {
      if (answer.error === "unauthorized" || (answer.role && answer.role !== "admin")) {
        signOut("The gateway no longer accepts this token (unauthorized). Sign in again; nothing was changed.");
      }
    },
  });
  setSignedIn(Boolean(token()));
  $("signin").addEventListener("submit", onSignIn);
  $("signout").addEventListener("click", () => signOut(""));
  $("restock-form").addEventListener("submit", onRestock);
  $("adjust-form").addEventListener("submit", onAdjust);
  $("limit-form").addEventListener("submit", onLimit);
  $("schedule-form").addEventListener("submit", onSchedule);
  $("edit-form").addEventListener("submit", onEdit);
  $("create-form").addEventListener("submit", onCreate);
  $("replay-range-form").addEventListener("submit", onReplayRange);
  $("manage-sku").addEventListener("change", () => syncManage(true));
  for (const b of document.querySelectorAll("[data-window]")) {
    b.addEventListener("click", () => guarded(() => windowAction(selectedSku(), b.dataset.window)));
  }
  clearStats();
  live.start();
  const nodesLoop = () => {
    if (!nodesWanted) return;
    pollNodes().finally(() => setTimeout(nodesLoop, NODES_EVERY_MS));
  };
  nodesLoop();
  const webhooksLoop = () => {
    if (!webhooksWanted) return;
    pollWebhooks().finally(() => setTimeout(webhooksLoop, WEBHOOKS_EVERY_MS));
  };
  // Only a gateway with webhooks has the panel (asking one without would
  // be a 404 in the console every 2 s).
  const askConfig = () =>
    fetch("/api/pages/config", { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : { webhooks: false }))
      .then((c) => {
        webhooksWanted = Boolean(c.webhooks);
        webhooksLoop();
      })
      .catch(() => setTimeout(askConfig, WEBHOOKS_EVERY_MS)); // offline: later
  askConfig();
}

main();
