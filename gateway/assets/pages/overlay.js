// overlay.js owns the viewer overlay: one card per product of `?sku=` or
// `?show=`, with "N left", a low-stock style, SOLD OUT and back-in-stock,
// in the language of `?lang=`. Every query parameter is validated here and
// an invalid one falls back to its default (an OBS source must never show
// a broken page because of a typo). The parameters are documented in
// docs/PAGES.md.

import { Live } from "./live.js";
import * as fmt from "./format.js";
import { resolve, fill } from "./i18n.js";

/** How long the back-in-stock badge stays after stock returns. */
const BACK_IN_STOCK_MS = 10000;
/** Most cards in a `?show=` overlay (`?max=`, 1–20): more would not fit on
 * a stream. */
const CARDS_MAX = 20;
const ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
const SIZES = { s: 0.75, m: 1, l: 1.35, xl: 1.75 };

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
  colors: {
    "--text": colorParam("text"),
    "--card": colorParam("card"),
    "--accent": colorParam("accent"),
    "--warn": colorParam("warn"),
  },
};

const root = document.getElementById("overlay");
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

function makeCard(s) {
  const card = document.createElement("article");
  card.className = "card";
  card.dataset.sku = s.id;
  card.dataset.bumps = "0";
  const img = document.createElement("img");
  img.className = "img";
  img.alt = "";
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

/** The visual level of a SKU: its sale state first, then its stock. */
function level(s) {
  if (s.state === "closed") return "closed";
  if (s.available === 0) return "soldout";
  if (s.state === "paused") return "paused";
  if (s.state === "scheduled") return "scheduled";
  return s.available <= config.low ? "low" : "ok";
}

function stockText(s, lvl) {
  const n = fmt.count(locale, s.available);
  switch (lvl) {
    case "closed":
      return strings.closed;
    case "soldout":
      return strings.soldOut;
    case "low":
      return fill(strings.low, { n });
    default:
      return fill(strings.left, { n });
  }
}

function noteText(s, lvl) {
  if (lvl === "paused") return strings.paused;
  if (lvl === "scheduled" && s.opens_at_ms) return fill(strings.opens, { time: fmt.when(locale, s.opens_at_ms) });
  return "";
}

function render(s) {
  const entry = cards.get(s.id) || makeCard(s);
  const lvl = level(s);
  const meta = s.meta;
  if (meta) {
    entry.title.textContent = meta.title;
    entry.price.textContent = fmt.price(locale, meta.price_minor, meta.currency);
    if (meta.image_url && entry.img.getAttribute("src") !== meta.image_url) entry.img.src = meta.image_url;
    entry.img.hidden = !meta.image_url;
  }
  const text = stockText(s, lvl);
  if (entry.left.textContent !== text) {
    const changed = entry.shown !== null;
    entry.left.textContent = text;
    if (changed) {
      // Restart the "bump" animation; the counter lets tests see it ran.
      entry.card.classList.remove("bump");
      void entry.card.offsetWidth;
      entry.card.classList.add("bump");
      entry.card.dataset.bumps = String(Number(entry.card.dataset.bumps) + 1);
    }
  }
  const wasSoldOut = entry.shown !== null && entry.shown.available === 0;
  const buyable = lvl === "ok" || lvl === "low";
  if (wasSoldOut && buyable) backInStock(entry);
  // "Back in stock!" while nobody can buy would mislead: the state wins.
  if (!buyable && entry.badge.dataset.back) endBackInStock(entry);
  const note = noteText(s, lvl);
  entry.card.dataset.note = note;
  entry.card.dataset.level = lvl;
  entry.card.dataset.available = String(s.available);
  entry.shown = { available: s.available };
  if (note && !entry.badge.dataset.back) {
    entry.badge.textContent = note;
    entry.badge.hidden = false;
  } else if (!entry.badge.dataset.back) {
    entry.badge.hidden = true;
  }
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

let live;

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
      // when a frame coalesced 0 -> n away.
      const entry = cards.get(sku);
      const buyable = entry && (entry.card.dataset.level === "ok" || entry.card.dataset.level === "low");
      if (buyable && event === "back_in_stock" && !entry.badge.dataset.back) backInStock(entry);
    },
    onTopicError: () => message(strings.unknown),
  });
  live.start();
}

main();
