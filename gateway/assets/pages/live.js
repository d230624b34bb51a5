// live.js owns the browser side of the websocket protocol (docs/PROTOCOL.md)
// for both pages: connect, subscribe, keep the latest state of every SKU of
// the topic, answer requests by id, and reconnect with back-off. It never
// touches the DOM and never calls the HTTP API except to fetch display data
// for a SKU that appeared without it.

/** Reconnect back-off: first retry after about BACKOFF_BASE_MS, doubling up to
 * BACKOFF_MAX_MS. Capped low enough that a viewer sees counts again within a
 * few seconds of a gateway restart, high enough that thousands of overlays
 * do not hammer a gateway that is still starting. */
const BACKOFF_BASE_MS = 250;
const BACKOFF_MAX_MS = 8000;
/** An app-level ping every PING_EVERY_MS; no pong within PONG_WAIT_MS means
 * the connection is dead even if the socket has not noticed (a phone that
 * switched networks keeps a half-open socket for minutes). */
const PING_EVERY_MS = 15000;
const PONG_WAIT_MS = 10000;
/** Requests waiting for an answer; more means the page is misbehaving. */
const PENDING_MAX = 32;
/** A request with no answer within this long is failed. */
const REQUEST_TIMEOUT_MS = 10000;
/** Most SKUs one page tracks: the gateway's catalog bound. */
const SKUS_MAX = 16384;
/** A refused topic (a SKU or show not created yet) is asked for again this
 * often, so an overlay set up before the product exists comes alive by
 * itself. */
const RESUBSCRIBE_MS = 5000;

export function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/**
 * A self-healing subscription to one topic.
 *
 * Callbacks (all optional):
 * - onStatus(status, detail): "connecting" | "live" | "reconnecting" | "error"
 * - onSnapshot(states, tsMs): the full state of the topic (after every (re)connect)
 * - onUpdate(changes, tsMs): [{prev, next}] for SKUs whose counts changed
 * - onStockEvent(sku, event, tsMs): "sold_out" | "back_in_stock"
 * - onStats(stats): the topic's server-side statistics (admin connections)
 * - onHello(hello): the server's hello frame (limits, broadcast interval)
 * - onTopicError(error): the topic was refused (unknown_topic, ...)
 * - token(): a token to present (`auth`) before subscribing on every
 *   (re)connect, or null; onAuth(answer | error) gets the outcome.
 */
export class Live {
  constructor(topic, callbacks) {
    this.topic = topic;
    this.cb = callbacks;
    /** id -> SkuState with `meta` kept from the snapshot (updates carry
     * `meta: null` unless display data changed). */
    this.skus = new Map();
    this.hello = null;
    this.ws = null;
    this.attempt = 0;
    this.nextId = 1;
    this.pending = new Map();
    this.retryTimer = null;
    this.resubscribeTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.metaFetches = new Set();
    this.stopped = false;
    /** Server clock minus ours, from the frames' `ts_ms` (countdowns
     * follow the server, not a viewer's wrong clock). */
    this.clockOffsetMs = 0;
  }

  /** The server's time now, as far as we can tell. */
  serverNow() {
    return Date.now() + this.clockOffsetMs;
  }

  /** Drops the connection and connects again at once (a new role). */
  reconnect() {
    if (this.ws) this.ws.close(1000, "reconnect");
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.resubscribeTimer);
    this.clearPing();
    if (this.ws) this.ws.close(1000, "page closed");
  }

  get connected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.hello !== null;
  }

  connect() {
    this.emitStatus("connecting");
    let ws;
    try {
      ws = new WebSocket(wsUrl(), "holdfast.v1.json");
    } catch (e) {
      this.scheduleReconnect(String(e));
      return;
    }
    this.ws = ws;
    this.hello = null;
    ws.onmessage = (ev) => this.onFrame(ws, ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.hello = null;
      this.clearPing();
      this.failPending("connection closed");
      if (this.stopped) return;
      // A close we asked for (a new role) comes back at once.
      if (ev.code === 1000 && ev.reason === "reconnect") this.connect();
      else this.scheduleReconnect(`closed (${ev.code})`);
    };
    // onerror is always followed by onclose, which does the work.
    ws.onerror = () => {};
  }

  scheduleReconnect(detail) {
    clearTimeout(this.retryTimer);
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(this.attempt, 16));
    // Full jitter on the upper half so overlays that lost the same gateway
    // do not all come back in the same millisecond.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.emitStatus("reconnecting", { detail, retryMs: Math.round(delay) });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  emitStatus(status, detail) {
    if (this.cb.onStatus) this.cb.onStatus(status, detail || {});
  }

  send(msg) {
    if (!this.connected) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Sends a request and resolves with its answer frame (or rejects with
   * the error frame / a local failure). */
  request(msg) {
    return new Promise((resolve, reject) => {
      if (!this.connected) {
        reject({ error: "offline", message: "not connected to the gateway" });
        return;
      }
      if (this.pending.size >= PENDING_MAX) {
        reject({ error: "busy", message: "too many requests in flight" });
        return;
      }
      const id = this.nextId++;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject({ error: "timeout", message: "no answer from the gateway" });
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.send({ ...msg, id });
    });
  }

  failPending(message) {
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject({ error: "offline", message });
    }
    this.pending.clear();
  }

  startPing() {
    this.clearPing();
    this.pingTimer = setInterval(() => {
      if (!this.connected || this.pongTimer !== null) return;
      this.pongTimer = setTimeout(() => {
        // Half-open socket: close it; onclose reconnects.
        if (this.ws) this.ws.close(4000, "no pong");
      }, PONG_WAIT_MS);
      this.send({ op: "ping", id: 0 });
    }, PING_EVERY_MS);
  }

  clearPing() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    this.pingTimer = null;
    this.pongTimer = null;
  }

  onFrame(ws, data) {
    if (ws !== this.ws || typeof data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    switch (msg.type) {
      case "hello": {
        this.hello = msg;
        if (this.cb.onHello) this.cb.onHello(msg);
        // The server answers in order: presented first, the token makes
        // the subscription an admin's (with stats frames).
        const token = this.cb.token ? this.cb.token() : null;
        if (token) {
          const answer = this.request({ op: "auth", token });
          if (this.cb.onAuth) answer.then(this.cb.onAuth, this.cb.onAuth);
          else answer.catch(() => {});
        }
        this.send({ op: "subscribe", id: 0, topics: [this.topic] });
        this.startPing();
        break;
      }
      case "snapshot":
        if (msg.topic === this.topic) this.applySnapshot(msg);
        break;
      case "update":
        if (msg.topic === this.topic) this.applyUpdate(msg);
        break;
      case "stock_event":
        if (msg.topic === this.topic && this.cb.onStockEvent) this.cb.onStockEvent(msg.sku, msg.event, msg.ts_ms);
        break;
      case "stats":
        if (msg.topic === this.topic && this.cb.onStats) this.cb.onStats(msg);
        break;
      case "pong":
        clearTimeout(this.pongTimer);
        this.pongTimer = null;
        if (msg.id !== 0) this.settle(msg.id, msg, false);
        break;
      case "error":
        if (msg.id === 0 || msg.id === null || msg.id === undefined) {
          // id 0 is our subscribe: the topic itself was refused.
          if (msg.error === "unknown_topic" || msg.error === "too_many_subscriptions") {
            this.emitStatus("error", { detail: msg.message, code: msg.error });
            if (this.cb.onTopicError) this.cb.onTopicError(msg);
            clearTimeout(this.resubscribeTimer);
            this.resubscribeTimer = setTimeout(() => {
              this.send({ op: "subscribe", id: 0, topics: [this.topic] });
            }, RESUBSCRIBE_MS);
          }
        } else {
          this.settle(msg.id, msg, true);
        }
        break;
      default:
        if (typeof msg.id === "number" && msg.id !== 0) this.settle(msg.id, msg, false);
    }
  }

  settle(id, msg, failed) {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (failed) p.reject(msg);
    else p.resolve(msg);
  }

  noteClock(tsMs) {
    const ts = Number(tsMs);
    if (Number.isFinite(ts) && ts > 0) this.clockOffsetMs = ts - Date.now();
  }

  applySnapshot(msg) {
    this.noteClock(msg.ts_ms);
    // A snapshot is the whole truth about the topic: after a gateway restart
    // SKUs may have new counts, or be gone.
    this.skus.clear();
    for (const s of msg.skus.slice(0, SKUS_MAX)) this.skus.set(s.id, s);
    this.attempt = 0;
    this.emitStatus("live");
    if (this.cb.onSnapshot) this.cb.onSnapshot([...this.skus.values()], msg.ts_ms);
  }

  applyUpdate(msg) {
    this.noteClock(msg.ts_ms);
    const changes = [];
    for (const s of msg.skus) {
      const prev = this.skus.get(s.id);
      if (!prev && this.skus.size >= SKUS_MAX) continue;
      const next = { ...s, meta: s.meta || (prev ? prev.meta : null) };
      this.skus.set(s.id, next);
      if (!next.meta) this.fetchMeta(s.id);
      changes.push({ prev, next });
    }
    if (changes.length && this.cb.onUpdate) this.cb.onUpdate(changes, msg.ts_ms);
  }

  /** A SKU we have no display data for (it should not happen: the gateway
   * sends meta with a SKU's first update) is looked up once over HTTP. */
  async fetchMeta(id) {
    if (this.metaFetches.has(id)) return;
    this.metaFetches.add(id);
    try {
      const r = await fetch(`/api/skus/${encodeURIComponent(id)}`);
      if (!r.ok) return;
      const full = await r.json();
      const cur = this.skus.get(id);
      if (cur && !cur.meta && full.meta) {
        cur.meta = full.meta;
        if (this.cb.onUpdate) this.cb.onUpdate([{ prev: cur, next: cur }], Date.now());
      }
    } catch {
      // Offline: the next snapshot carries the meta anyway.
    } finally {
      this.metaFetches.delete(id);
    }
  }
}
