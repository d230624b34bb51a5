// format.js owns turning numbers, prices and times into text for a locale,
// with Intl only (no hand-made separators or currency symbols). Formatters
// are cached: building an Intl object costs far more than using one, and a
// busy show formats counts ten times a second.

/** Most cached formatters; a page uses a handful, this only bounds a bug. */
const CACHE_MAX = 64;
const cache = new Map();

function cached(key, make) {
  let f = cache.get(key);
  if (!f) {
    if (cache.size >= CACHE_MAX) cache.clear();
    f = make();
    cache.set(key, f);
  }
  return f;
}

function numberFormat(locale, options) {
  const key = `n|${locale}|${JSON.stringify(options)}`;
  return cached(key, () => {
    try {
      return new Intl.NumberFormat(locale, options);
    } catch {
      // Unknown currency code or locale: fall back to plain numbers rather
      // than break the page.
      return new Intl.NumberFormat("en", { maximumFractionDigits: 2 });
    }
  });
}

/** An integer count, e.g. 1 200 in nb, 1,200 in en. */
export function count(locale, n) {
  return numberFormat(locale, { maximumFractionDigits: 0 }).format(n);
}

/** A number with at most `digits` decimals. */
export function decimal(locale, n, digits) {
  return numberFormat(locale, { maximumFractionDigits: digits, minimumFractionDigits: digits }).format(n);
}

/** A ratio (0..1) as a percentage. */
export function percent(locale, ratio) {
  return numberFormat(locale, { style: "percent", maximumFractionDigits: 0 }).format(ratio);
}

/** Digits after the decimal point of a currency (2 for NOK, 0 for JPY). */
export function currencyDigits(currency) {
  const f = numberFormat("en", { style: "currency", currency });
  const digits = f.resolvedOptions().maximumFractionDigits;
  return Number.isInteger(digits) ? digits : 2;
}

/** A price in minor units (øre, cents) in the locale's currency format. */
export function price(locale, minor, currency) {
  const digits = currencyDigits(currency);
  const f = numberFormat(locale, { style: "currency", currency, currencyDisplay: "narrowSymbol" });
  return f.format(minor / 10 ** digits);
}

/** Parses a price typed in major units ("249", "249.50", "249,50") into
 * minor units, or null if it is not a price. */
export function parsePrice(text, currency) {
  const t = String(text).trim().replace(",", ".");
  if (!/^\d{1,12}(\.\d{1,4})?$/.test(t)) return null;
  const digits = currencyDigits(currency);
  const [whole, frac = ""] = t.split(".");
  if (frac.length > digits) return null;
  return Number(whole) * 10 ** digits + Number(frac.padEnd(digits, "0") || 0);
}

/** A clock time, with the date too unless it is today. */
export function when(locale, ms) {
  const d = new Date(ms);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  const options = sameDay ? { timeStyle: "short" } : { dateStyle: "medium", timeStyle: "short" };
  return cached(`d|${locale}|${sameDay}`, () => new Intl.DateTimeFormat(locale, options)).format(d);
}

/** A duration in minutes as "45 min", "2 h 5 min" (unit names from Intl). */
export function minutes(locale, mins) {
  if (!Number.isFinite(mins)) return "—";
  const total = Math.max(0, Math.round(mins));
  const unit = (u) => numberFormat(locale, { style: "unit", unit: u, unitDisplay: "short" });
  if (total === 0 && mins > 0) return `< ${unit("minute").format(1)}`;
  if (total < 60) return unit("minute").format(total);
  const h = Math.floor(total / 60);
  const m = total % 60;
  return m === 0 ? unit("hour").format(h) : `${unit("hour").format(h)} ${unit("minute").format(m)}`;
}
