// buy.js owns buying from a page: the overlay's `?buy=1` and the
// embeddable `/buy-button`. It gets the buyer token (the URL fragment, or
// `postMessage` from an allowed embedding origin; never the query string,
// which lands in logs), presents it on the websocket with `auth`, reserves
// with a request id (a double tap or a retry never makes two holds), counts
// down to the hold's deadline on the server's clock, hands off to the
// shop's signed checkout URL, and follows the hold to its outcome
// (committed, released, expired). It never puts the token in a URL: HTTP
// calls carry it in `Authorization`. The flow is in docs/INTEGRATION.md.

import { fill } from "./i18n.js";

/** While a hold is held, its state is read this often: the shop commits or
 * releases server-to-server, so the page learns the outcome by asking.
 * One small GET per buyer per second, only while a hold counts down. */
const HOLD_POLL_MS = 1000;
/** The countdown is redrawn this often... */
const TICK_MS = 250;
/** ...but read out to screen readers only at these seconds left (and when
 * the hold is made): every second would drown everything else. */
const ANNOUNCE_AT_S = new Set([240, 180, 120, 60, 30, 10]);
/** Most SKUs with a Buy panel on one page. */
const PANELS_MAX = 64;
/** Longest token accepted from the fragment or a message (the gateway
 * refuses more than 8 KiB anyway). */
const TOKEN_CHARS_MAX = 8192;
const TOKEN_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** Error codes that mean the token no longer proves the buyer. */
const SESSION_CODES = new Set([
  "token_expired",
  "unauthorized",
  "token_not_yet_valid",
  "token_bad_signature",
  "token_unknown_kid",
  "token_malformed",
  "token_bad_algorithm",
  "token_lifetime_too_long",
]);

/** The message a refusal shows (localized), by its code. */
export function refusalText(strings, code) {
  if (code === "sold_out" || code === "not_enough_available") return strings.refSoldOut;
  if (code === "limit_exceeded" || code === "token_limit_exceeded" || code === "token_replayed") {
    return strings.refLimit;
  }
  if (code === "not_open") return strings.refNotOpen;
  if (SESSION_CODES.has(code)) return strings.refSession;
  return strings.refOther;
}

/** "4:59". */
function mmss(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, "0")}`;
}

function randomId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Where the buyer token comes from. `onToken(token)` is called with each
 * token (a fresh one replaces the last). Returns the origin a token came
 * from by message, for the checkout hand-off back to the embedding page.
 */
export class TokenSource {
  constructor(onToken) {
    this.onToken = onToken;
    this.token = null;
    this.parentOrigin = null;
    this.allowed = new Set();
  }

  /** Reads `#token=` (and removes it from the address bar at once), then
   * listens for `{type: "holdfast:token", token}` from the parent frame if
   * its origin is one of the gateway's `--embed-origin`s. */
  async start() {
    const hash = new URLSearchParams(location.hash.slice(1));
    const fromHash = hash.get("token");
    if (location.hash) {
      // Out of the address bar, the history and any later copy of the URL.
      history.replaceState(null, "", location.pathname + location.search);
    }
    if (fromHash) this.accept(fromHash);
    try {
      const r = await fetch("/api/pages/config");
      const config = r.ok ? await r.json() : {};
      this.allowed = new Set(config.embed_origins || []);
    } catch {
      this.allowed = new Set();
    }
    window.addEventListener("message", (ev) => {
      // Only the frame that embeds us, only from an allowed origin: any
      // other page could otherwise make this one act for its buyer.
      if (ev.source !== window.parent || window.parent === window) return;
      const data = ev.data;
      if (!data || data.type !== "holdfast:token" || typeof data.token !== "string") return;
      if (!this.allowed.has(ev.origin)) {
        // Tells the shop's developer why nothing happens (no secret in it).
        ev.source.postMessage({ type: "holdfast:origin_refused", origin: ev.origin }, ev.origin);
        return;
      }
      this.parentOrigin = ev.origin;
      this.accept(data.token);
    });
    if (window.parent !== window) window.parent.postMessage({ type: "holdfast:ready" }, "*");
  }

  accept(token) {
    if (token.length > TOKEN_CHARS_MAX || !TOKEN_RE.test(token)) return;
    this.token = token;
    this.onToken(token);
  }

  /** Tells the embedding page (only the allowed origin that gave the
   * token) about the hand-off and outcomes. */
  notify(msg) {
    if (this.parentOrigin) window.parent.postMessage(msg, this.parentOrigin);
  }
}

/**
 * The Buy controls of one SKU: a button, a status line, the countdown and
 * the checkout link. `ctx` = {live, tokens, strings, announce(text), title()}.
 */
export class BuyPanel {
  constructor(sku, ctx) {
    this.sku = sku;
    this.ctx = ctx;
    /** idle | pending | reserved | committed | released | expired | refused */
    this.state = "idle";
    this.requestId = null;
    this.hold = null;
    this.deadlineMs = 0;
    this.pollTimer = null;
    this.tickTimer = null;
    this.announced = new Set();

    const el = document.createElement("div");
    el.className = "buy";
    el.dataset.state = "idle";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "buy-btn";
    button.addEventListener("click", () => this.tap());
    const status = document.createElement("div");
    status.className = "buy-status";
    const link = document.createElement("a");
    link.className = "buy-checkout";
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.hidden = true;
    el.append(button, status, link);
    this.el = el;
    this.button = button;
    this.status = status;
    this.link = link;
    this.draw();
  }

  draw() {
    const s = this.ctx.strings;
    this.el.dataset.state = this.state;
    this.button.textContent = s.buy;
    this.button.setAttribute("aria-label", fill(s.buyLabel, { title: this.ctx.title() }));
    const busy = this.state === "pending" || this.state === "reserved";
    // Tappable in every sale state: the gateway decides, and its refusal
    // ("Not open yet", "Sold out") says more than a greyed-out button.
    this.button.hidden = this.state === "reserved";
    this.button.disabled = busy || this.state === "session";
    this.button.setAttribute("aria-busy", String(this.state === "pending"));
  }

  say(text) {
    this.status.textContent = text;
  }

  async tap() {
    if (this.state === "pending" || this.state === "reserved") return;
    // One id per intent to buy: a retry after a lost answer sends the same
    // id and gets the first answer back, never a second hold.
    if (!this.requestId) this.requestId = `buy-${randomId()}`;
    this.state = "pending";
    this.link.hidden = true;
    this.say(this.ctx.strings.reserving);
    this.draw();
    let answer;
    try {
      answer = await this.ctx.live.request({
        op: "reserve",
        sku: this.sku,
        qty: 1,
        request_id: this.requestId,
      });
    } catch (err) {
      const code = err.error || "offline";
      if (code === "offline" || code === "timeout" || code === "in_progress") {
        // Unknown outcome: keep the request id, so tapping again replays.
        this.state = "idle";
        this.say(this.ctx.strings.refOther);
      } else {
        this.requestId = null;
        this.state = SESSION_CODES.has(code) ? "session" : "refused";
        this.say(refusalText(this.ctx.strings, code));
      }
      this.el.dataset.code = code;
      this.draw();
      this.ctx.announce(this.status.textContent);
      return;
    }
    this.requestId = null;
    this.reserved(answer);
  }

  reserved(answer) {
    this.hold = answer.hold;
    this.deadlineMs = answer.deadline_ms;
    this.state = "reserved";
    this.el.dataset.code = "";
    this.el.dataset.hold = answer.hold;
    this.announced.clear();
    this.draw();
    this.tick();
    this.ctx.announce(fill(this.ctx.strings.announceReserved, { t: mmss(this.leftMs()) }));
    clearInterval(this.tickTimer);
    this.tickTimer = setInterval(() => this.tick(), TICK_MS);
    this.schedulePoll();
    this.handOff();
  }

  /** Time left on the hold by the server's clock (the frames' `ts_ms`
   * correct a viewer whose clock is wrong). */
  leftMs() {
    return this.deadlineMs - this.ctx.live.serverNow();
  }

  tick() {
    if (this.state !== "reserved") return;
    const left = this.leftMs();
    this.say(fill(this.ctx.strings.reservedFor, { t: mmss(left) }));
    const secs = Math.ceil(left / 1000);
    if (ANNOUNCE_AT_S.has(secs) && !this.announced.has(secs)) {
      this.announced.add(secs);
      this.ctx.announce(fill(this.ctx.strings.announceLeft, { t: mmss(left) }));
    }
    // The deadline passed: ask at once rather than at the next poll.
    if (left <= 0 && !this.askedAtDeadline) {
      this.askedAtDeadline = true;
      this.poll();
    }
  }

  async handOff() {
    const hold = this.hold;
    const r = await this.authed("POST", `/api/holds/${hold}/checkout`);
    if (!r || !r.ok || this.hold !== hold || this.state !== "reserved") return;
    const body = await r.json();
    this.link.href = body.url;
    this.link.textContent = this.ctx.strings.checkout;
    this.link.hidden = false;
    this.ctx.tokens.notify({ type: "holdfast:checkout", hold, sku: this.sku, url: body.url });
  }

  /** An HTTP call with the token in `Authorization` (never in the URL). */
  async authed(method, path) {
    const token = this.ctx.tokens.token;
    if (!token) return null;
    try {
      return await fetch(path, { method, headers: { authorization: `Bearer ${token}` } });
    } catch {
      return null;
    }
  }

  schedulePoll() {
    clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(() => this.poll(), HOLD_POLL_MS);
  }

  async poll() {
    const hold = this.hold;
    if (this.state !== "reserved") return;
    const r = await this.authed("GET", `/api/holds/${hold}`);
    if (this.hold !== hold || this.state !== "reserved") return;
    if (r && r.ok) {
      const view = await r.json();
      if (view.state !== "held") {
        this.ended(view.state);
        return;
      }
      // An extension by the shop moves the deadline.
      this.deadlineMs = view.deadline_ms;
      if (this.leftMs() > 0) this.askedAtDeadline = false;
    } else if (r && r.status === 401) {
      const body = await r.json().catch(() => ({}));
      this.stopTimers();
      this.state = "session";
      this.say(refusalText(this.ctx.strings, body.error || "unauthorized"));
      this.el.dataset.code = body.error || "unauthorized";
      this.draw();
      this.ctx.announce(this.status.textContent);
      return;
    }
    this.schedulePoll();
  }

  ended(outcome) {
    this.stopTimers();
    this.state = outcome;
    this.link.hidden = true;
    const s = this.ctx.strings;
    const text = { committed: s.bought, released: s.released, expired: s.expired }[outcome] || s.released;
    this.say(text);
    this.draw();
    this.ctx.announce(text);
    this.ctx.tokens.notify({ type: `holdfast:${outcome}`, hold: this.hold, sku: this.sku });
  }

  stopTimers() {
    clearInterval(this.tickTimer);
    clearTimeout(this.pollTimer);
    this.askedAtDeadline = false;
  }

  /** The gateway refused the token itself (say, expired before the page
   * presented it). A hold counting down keeps its countdown. */
  refused(code, text) {
    if (this.state === "reserved" || this.state === "committed") return;
    this.state = SESSION_CODES.has(code) ? "session" : "refused";
    this.el.dataset.code = code;
    this.say(text);
    this.draw();
  }

  /** A fresh token: a session refusal is over. */
  renewed() {
    if (this.state === "session") {
      this.state = "idle";
      this.say("");
      this.draw();
    }
  }
}

/** Buy panels by SKU, at most PANELS_MAX. */
export class BuyPanels {
  constructor(ctx) {
    this.ctx = ctx;
    this.panels = new Map();
  }

  get(sku, title) {
    let p = this.panels.get(sku);
    if (!p && this.panels.size < PANELS_MAX) {
      p = new BuyPanel(sku, { ...this.ctx, title });
      this.panels.set(sku, p);
    }
    return p || null;
  }

  each(f) {
    for (const p of this.panels.values()) f(p);
  }
}
