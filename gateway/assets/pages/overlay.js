// overlay.js owns the viewer overlay: one card per product of `?sku=` or
// `?show=`, with "N left", a low-stock style, "all in carts" while the last
// units sit in carts, SOLD OUT only when nothing is left or held, back in
// stock only on the way out of sold out, paused and scheduled sales (with
// a countdown to the drop), in the language of `?lang=`. Every query
// parameter is validated here and an invalid one falls back to its default
// (an OBS source must never show a broken page because of a typo). The
// parameters are documented in docs/PAGES.md. With `?buy=1` and a buyer
// token each card also gets a Buy button (buy.js).

import { Live } from "./live.js";
import * as fmt from "./format.js";
import { resolve, fill } from "./i18n.js";
import { BuyPanels, TokenSource, refusalText } from "./buy.js";

/** How long the back-in-stock badge stays after stock returns. */
const BACK_IN_STOCK_MS = 10000;
/** Most cards in a `?show=` overlay (`?max=`, 1–20): more would not fit on
 * a stream. */
const CARDS_MAX = 20;
/** A drop this close shows a countdown ("Opens in 0:42"); a later one its
 * opening time. */
const COUNTDOWN_MAX_MS = 24 * 3600 * 1000;
/** Countdowns are redrawn this often. */
const TICK_MS = 1000;
const ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
const SIZES = { s: 0.75, m: 1, l: 1.35, xl: 1.75 };
/** Levels a buyer can buy at. */
const BUYABLE = new Set(["ok", "low"]);

const params = new URLSearchParams(location.search);
const { locale, lang, strings } = resolve(params.get("lang"));

function intParam(name, min, max, fallback) {
  const raw = params.get(name);
  if (raw === null || !/^\d{1,7}$/.test(raw)) return fallback;
  const n = Number(raw);
  return n >= min && n <= max ? n : fallback;
}

function flagParam(name, fallback) {
  const raw = params.get(name);
  if (raw === "0" || raw === "false" || raw === "no") return false;
  if (raw === "1" || raw === "true" || raw === "yes") return true;
  return fallback;
}

/** A colour from the URL: a CSS colour name or hex digits with or without
 * the `#` (which would start the URL's fragment unless escaped). */
function colorParam(name) {
  const raw = (params.get(name) || "").trim();
  if (!raw || raw.length > 32) return null;
  const value = /^[0-9a-fA-F]{3,8}$/.test(raw) ? `#${raw}` : raw;
  if (!/^(#[0-9a-fA-F]{3,8}|[a-zA-Z]{3,24})$/.test(value)) return null;
  return CSS.supports("color", value) ? value : null;
}

function sizeParam() {
  const raw = params.get("size");
  if (raw === null) return 1;
  if (raw in SIZES) return SIZES[raw];
  const n = Number(raw);
  return /^\d(\.\d{1,2})?$/.test(raw) && n >= 0.5 && n <= 4 ? n : 1;
}

const config = {
  sku: ID_RE.test(params.get("sku") || "") ? params.get("sku") : null,
  show: ID_RE.test(params.get("show") || "") ? params.get("show") : null,
  low: intParam("low", 0, 1000000, 5),
  max: intParam("max", 1, CARDS_MAX, 6),
  theme: params.get("theme") === "light" ? "light" : "dark",
  scale: sizeParam(),
  price: flagParam("price", true),
  image: flagParam("image", true),
  // The embeddable buy button (/buy-button) is this page in button mode.
  buy: document.getElementById("overlay").dataset.mode === "button" || flagParam("buy", false),
  colors: {
    "--text": colorParam("text"),
    "--card": colorParam("card"),
    "--accent": colorParam("accent"),
    "--warn": colorParam("warn"),
  },
};

const root = document.getElementById("overlay");
const announcer = document.getElementById("announce");
/** id -> card elements and the state shown. */
const cards = new Map();

function applyLook() {
  document.documentElement.lang = lang;
  document.documentElement.dataset.theme = config.theme;
  const style = document.documentElement.style;
  // CSSOM calls, not style attributes: allowed by the page's CSP.
  style.setProperty("--scale", String(config.scale));
  for (const [prop, value] of Object.entries(config.colors)) {
    if (value) style.setProperty(prop, value);
  }
  root.dataset.low = String(config.low);
  root.classList.toggle("no-price", !config.price);
  root.classList.toggle("no-image", !config.image);
}

function message(text) {
  const p = document.createElement("p");
  p.className = "message";
  p.textContent = text;
  root.replaceChildren(p);
}

/** Tells screen readers one thing that matters (not every count tick). */
function announce(text) {
  announcer.textContent = text;
}

function makeCard(s) {
  const card = document.createElement("article");
  card.className = "card";
  card.dataset.sku = s.id;
  card.dataset.bumps = "0";
  const img = document.createElement("img");
  img.className = "img";
  img.alt = "";
  img.hidden = true; // until it has a source
  card.classList.add("no-img");
  // A blocked or missing image is hidden, never a broken-image icon.
  img.addEventListener("error", () => {
    img.hidden = true;
    card.classList.add("no-img");
  });
  const body = document.createElement("div");
  body.className = "body";
  const title = document.createElement("div");
  title.className = "title";
  const price = document.createElement("div");
  price.className = "price";
  body.append(title, price);
  const stock = document.createElement("div");
  stock.className = "stock";
  const left = document.createElement("div");
  left.className = "left";
  const badge = document.createElement("div");
  badge.className = "badge";
  badge.hidden = true;
  stock.append(left, badge);
  card.append(img, body, stock);
  card.addEventListener("animationend", () => card.classList.remove("bump"));
  const entry = { card, img, title, price, left, badge, shown: null, backTimer: null };
  cards.set(s.id, entry);
  return entry;
}

/** Milliseconds until a scheduled sale opens (server clock), or 0. */
function waitMs(s) {
  if (s.state !== "scheduled" || !s.opens_at_ms) return 0;
  return Math.max(0, s.opens_at_ms - live.serverNow());
}

/** The visual level of a SKU: closed first, then its stock (units in carts
 * are not sold out: they may come back), then its sale window. A drop
 * whose time has come is on sale even before the next frame says so. */
function level(s) {
  if (s.state === "closed") return "closed";
  if (s.available === 0 && s.held === 0) return "soldout";
  if (s.available === 0) return "carts";
  if (s.state === "paused") return "paused";
  if (waitMs(s) > 0) return "scheduled";
  return s.available <= config.low ? "low" : "ok";
}

/** "0:42", "12:05", "1:02:09". */
function countdown(ms) {
  const total = Math.ceil(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = String(total % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** The big text of a card. */
function stockText(s, lvl) {
  const n = fmt.count(locale, s.available);
  switch (lvl) {
    case "closed":
      return strings.closed;
    case "soldout":
      return strings.soldOut;
    case "carts":
      return strings.carts;
    case "paused":
      return strings.paused;
    case "scheduled": {
      const wait = waitMs(s);
      return wait <= COUNTDOWN_MAX_MS
        ? fill(strings.opensIn, { t: countdown(wait) })
        : fill(strings.opens, { time: fmt.when(locale, s.opens_at_ms) });
    }
    case "low":
      return fill(strings.low, { n });
    default:
      return fill(strings.left, { n });
  }
}

/** The small note under it (stock while not on sale, "may come back"). */
function noteText(s, lvl) {
  if (lvl === "carts") return strings.mayComeBack;
  if (lvl === "paused" || lvl === "scheduled") return fill(strings.left, { n: fmt.count(locale, s.available) });
  return "";
}

function title(s) {
  return s.meta ? s.meta.title : s.id;
}

function render(s) {
  const entry = cards.get(s.id) || makeCard(s);
  const lvl = level(s);
  const meta = s.meta;
  if (meta) {
    entry.title.textContent = meta.title;
    entry.card.title = meta.title; // the whole title, where it is clamped
    entry.price.textContent = fmt.price(locale, meta.price_minor, meta.currency);
    if (entry.img.getAttribute("src") !== (meta.image_url || null)) {
      entry.img.hidden = !meta.image_url;
      entry.card.classList.toggle("no-img", !meta.image_url);
      if (meta.image_url) entry.img.src = meta.image_url;
      else entry.img.removeAttribute("src");
    }
  }
  const text = stockText(s, lvl);
  const prev = entry.shown;
  if (entry.left.textContent !== text) entry.left.textContent = text;
  // The change animation for a new count or level, not a countdown tick.
  if (prev !== null && (prev.available !== s.available || prev.level !== lvl)) {
    entry.card.classList.remove("bump");
    void entry.card.offsetWidth; // restarts the animation
    entry.card.classList.add("bump");
    entry.card.dataset.bumps = String(Number(entry.card.dataset.bumps) + 1);
  }
  if (prev !== null && prev.level !== "soldout" && lvl === "soldout") {
    announce(fill(strings.announceSoldOut, { title: title(s) }));
  }
  // Back in stock only on the way out of sold out to something buyable:
  // units coming back from carts are not news (they were never gone).
  if (prev !== null && prev.level === "soldout" && BUYABLE.has(lvl)) {
    backInStock(entry);
    announce(fill(strings.announceBack, { title: title(s), n: fmt.count(locale, s.available) }));
  }
  // "Back in stock!" while nobody can buy would mislead: the state wins.
  if (!BUYABLE.has(lvl) && entry.badge.dataset.back) endBackInStock(entry);
  const note = noteText(s, lvl);
  entry.card.dataset.note = note;
  entry.card.dataset.level = lvl;
  entry.card.dataset.available = String(s.available);
  entry.shown = { available: s.available, level: lvl };
  renderBuy(entry, s);
  if (!entry.badge.dataset.back) {
    entry.badge.textContent = note;
    entry.badge.hidden = !note;
  }
}

/** The Buy panel of a card, once a buyer token is here. */
function renderBuy(entry, s) {
  if (!buy || !tokens.token) return;
  const panel = buy.get(s.id, () => title(live.skus.get(s.id) || s));
  if (!panel) return;
  if (panel.el.parentNode !== entry.card) entry.card.append(panel.el);
  if (authRefusal) panel.refused(authRefusal, refusalText(strings, authRefusal));
}

function backInStock(entry) {
  clearTimeout(entry.backTimer);
  entry.badge.textContent = strings.back;
  entry.badge.dataset.back = "1";
  entry.badge.hidden = false;
  entry.card.classList.add("back");
  entry.backTimer = setTimeout(() => {
    endBackInStock(entry);
    const s = live.skus.get(entry.card.dataset.sku);
    if (s) render(s);
  }, BACK_IN_STOCK_MS);
}

function endBackInStock(entry) {
  clearTimeout(entry.backTimer);
  delete entry.badge.dataset.back;
  entry.card.classList.remove("back");
  entry.badge.hidden = true;
}

/** Puts the cards of the current states in order, at most `max` of them. */
function layout(states) {
  const shown = states.slice(0, config.sku ? 1 : config.max);
  const keep = new Set(shown.map((s) => s.id));
  for (const [id, entry] of cards) {
    if (!keep.has(id)) {
      clearTimeout(entry.backTimer);
      entry.card.remove();
      cards.delete(id);
    }
  }
  for (const s of shown) render(s);
  root.replaceChildren(...shown.map((s) => cards.get(s.id).card));
}

/** Redraws the cards whose text moves with the clock (countdowns). */
function tick() {
  for (const [id, entry] of cards) {
    const s = live.skus.get(id);
    if (s && (entry.shown?.level === "scheduled" || s.state === "scheduled")) render(s);
  }
}

let live;
/** With `?buy=1`: the token's source and the Buy panels. */
let tokens = null;
let buy = null;
/** The code the gateway refused the token's `auth` with, or null. */
let authRefusal = null;

function onAuth(answer) {
  authRefusal = answer.type === "authed" && answer.role === "buyer" ? null : answer.error || "unauthorized";
  root.dataset.auth = authRefusal ? `refused:${authRefusal}` : "buyer";
  if (!authRefusal) buy.each((p) => p.renewed());
  tokens.notify({ type: authRefusal ? "holdfast:refused" : "holdfast:authed", error: authRefusal });
  for (const [id] of cards) {
    const s = live.skus.get(id);
    if (s) render(s);
  }
}

/** Reads the token (fragment or postMessage) and presents each new one. */
function startBuying() {
  tokens = new TokenSource(() => {
    if (live && live.connected) live.request({ op: "auth", token: tokens.token }).then(onAuth, onAuth);
  });
  buy = new BuyPanels({ live, tokens, strings, announce });
  tokens.start();
}

function main() {
  applyLook();
  if (!config.sku && !config.show) {
    root.dataset.status = "error";
    message(strings.setup);
    return;
  }
  const topic = config.sku ? `sku:${config.sku}` : `show:${config.show}`;
  live = new Live(topic, {
    onHello: (hello) => {
      root.dataset.broadcastIntervalMs = String(hello.broadcast_interval_ms);
    },
    onStatus: (status) => {
      root.dataset.status = status;
      root.dataset.reconnecting = strings.reconnecting;
    },
    onSnapshot: (states) => layout(states),
    onUpdate: (changes) => {
      let added = false;
      for (const { next } of changes) {
        if (cards.has(next.id)) render(next);
        else added = true;
      }
      // A SKU added to the show while we watch: lay out again.
      if (added) layout([...live.skus.values()]);
      root.dataset.lastUpdateMs = String(Date.now());
    },
    onStockEvent: (sku, event) => {
      // Counts already say it; the event only guarantees the badge even
      // when a frame coalesced sold out -> in stock away.
      const entry = cards.get(sku);
      const buyable = entry && BUYABLE.has(entry.card.dataset.level);
      if (buyable && event === "back_in_stock" && !entry.badge.dataset.back) backInStock(entry);
    },
    onTopicError: () => message(strings.unknown),
    token: () => (tokens ? tokens.token : null),
    onAuth: (answer) => onAuth(answer),
  });
  if (config.buy) startBuying();
  live.start();
  setInterval(tick, TICK_MS);
}

main();
