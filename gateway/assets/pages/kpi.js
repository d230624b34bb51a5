// kpi.js owns the dashboard's live KPIs, derived only from what the
// websocket protocol carries: absolute counts per SKU (available, held,
// sold, total), coalesced per broadcast interval. It keeps bounded history
// and never talks to the network or the DOM.
//
// How the flows are derived. Between two frames of one SKU, with d* the
// change of each count:
//   committed units  C = d(sold)                 (sold only grows by commits)
//   reserved units   R and returned units X (released or expired holds) obey
//                    d(held) = R - C - X, so R - X = d(held) + d(sold).
// Restock, adjust and a new total move `available` and `total` only, so they
// do not disturb R - X. One frame tells the net R - X but not R and X apart:
// a hold taken and given back within one broadcast interval (100 ms by
// default) cancels out. So we count a positive net as reserved units and a
// negative net as returned units: both are lower bounds, exact whenever
// reservations and returns fall in different intervals, which is the usual
// case for a human checkout (minutes between reserve and pay or expiry).
// Expired and released holds look the same in counts, so the dashboard
// reports them together as "abandoned" holds: units that left `held`
// without being sold. Conversion is sold / (sold + abandoned) over the
// units whose holds ended while the page watched.

/** Window of "units sold per minute": the sales of the last minute. */
export const RATE_WINDOW_MS = 60_000;
/** Chart bars: one per BUCKET_MS, the last BUCKETS_MAX of them (5 min). */
export const BUCKET_MS = 10_000;
export const BUCKETS_MAX = 30;
/** Sale samples kept per SKU inside the rate window; at the fastest
 * broadcast interval (5 ms) a minute has 12 000 frames, so past this bound
 * samples merge into the newest one instead of growing. */
const SAMPLES_MAX = 2048;
/** SKUs tracked; the gateway's catalog bound. */
const SKUS_MAX = 16384;

class SkuFlows {
  constructor() {
    this.committed = 0;
    this.reserved = 0;
    this.abandoned = 0;
    /** [{t, units}] sales inside the rate window, oldest first. */
    this.sales = [];
  }

  addSale(t, units) {
    if (this.sales.length >= SAMPLES_MAX) this.sales[this.sales.length - 1].units += units;
    else this.sales.push({ t, units });
  }

  soldInWindow(now) {
    const from = now - RATE_WINDOW_MS;
    let i = 0;
    while (i < this.sales.length && this.sales[i].t <= from) i += 1;
    if (i > 0) this.sales.splice(0, i);
    return this.sales.reduce((n, s) => n + s.units, 0);
  }
}

export class Kpis {
  constructor() {
    this.flows = new Map();
    /** [{start, units}] newest last, at most BUCKETS_MAX. */
    this.buckets = [];
  }

  /** One SKU changed from `prev` to `next` at `now` (ms), within one
   * live connection. Snapshots are not observed: after a reconnect the gap
   * has an unknown length and cannot be attributed to any minute, so a
   * snapshot is a new baseline. */
  observe(prev, next, now) {
    if (!prev) return;
    const dSold = next.sold - prev.sold;
    if (dSold < 0) return; // sold never decreases: a new gateway state, a new baseline
    let f = this.flows.get(next.id);
    if (!f) {
      if (this.flows.size >= SKUS_MAX) return;
      f = new SkuFlows();
      this.flows.set(next.id, f);
    }
    const net = next.held - prev.held + dSold;
    if (net > 0) f.reserved += net;
    if (net < 0) f.abandoned += -net;
    if (dSold > 0) {
      f.committed += dSold;
      f.addSale(now, dSold);
      this.addToChart(now, dSold);
    }
  }

  addToChart(now, units) {
    const start = Math.floor(now / BUCKET_MS) * BUCKET_MS;
    const last = this.buckets[this.buckets.length - 1];
    if (last && last.start === start) last.units += units;
    else this.buckets.push({ start, units });
    while (this.buckets.length > BUCKETS_MAX) this.buckets.shift();
  }

  /** KPIs of one SKU in state `s`. */
  sku(s, now) {
    const f = this.flows.get(s.id) || new SkuFlows();
    return summarise([s], [f], now);
  }

  /** KPIs of several SKUs together (the show). */
  total(states, now) {
    return summarise(
      states,
      states.map((s) => this.flows.get(s.id) || new SkuFlows()),
      now,
    );
  }

  /** Units sold per bucket for the last BUCKETS_MAX buckets ending now,
   * oldest first, empty buckets included. */
  chart(now) {
    const end = Math.floor(now / BUCKET_MS) * BUCKET_MS;
    const out = [];
    for (let i = BUCKETS_MAX - 1; i >= 0; i -= 1) {
      const start = end - i * BUCKET_MS;
      const b = this.buckets.find((x) => x.start === start);
      out.push({ start, units: b ? b.units : 0 });
    }
    return out;
  }
}

function summarise(states, flows, now) {
  let available = 0;
  let sold = 0;
  let total = 0;
  for (const s of states) {
    available += s.available;
    sold += s.sold;
    total += s.total;
  }
  let committed = 0;
  let abandoned = 0;
  let soldLastMinute = 0;
  for (const f of flows) {
    committed += f.committed;
    abandoned += f.abandoned;
    soldLastMinute += f.soldInWindow(now);
  }
  const ratePerMin = soldLastMinute * (60_000 / RATE_WINDOW_MS);
  const ended = committed + abandoned;
  return {
    ratePerMin,
    committed,
    abandoned,
    /** null until some hold ended while the page watched. */
    conversion: ended > 0 ? committed / ended : null,
    sellThrough: total > 0 ? sold / total : null,
    /** Minutes to sell out at the current pace; 0 when sold out, null
     * when nothing sells. */
    etaMin: available === 0 ? 0 : ratePerMin > 0 ? available / ratePerMin : null,
  };
}
