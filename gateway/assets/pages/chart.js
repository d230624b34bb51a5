// chart.js owns the dashboard's small "sales over time" bar chart, drawn as
// inline SVG built with DOM calls (no inline markup strings, so the page's
// Content-Security-Policy needs no 'unsafe-inline' and titles cannot inject).

const SVG = "http://www.w3.org/2000/svg";
/** Drawing height in CSS pixels (the stylesheet gives the element the same). */
const HEIGHT = 130;
const AXIS = 18;
/** Width when the element is not laid out yet (hidden tab). */
const WIDTH_FALLBACK = 600;
/** Widest bar: a show's first minutes are a few thin bars at the right,
 * growing leftwards, not one bar across the page. */
const BAR_SLOT_MAX = 24;

function el(name, attrs) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/**
 * Redraws `svg` with one bar per bucket ([{start, units}], oldest first).
 * `label(units)` formats the scale, `time(ms)` the axis ends.
 */
export function drawSales(svg, buckets, label, time) {
  // One user unit per CSS pixel, so text is never stretched: the bars
  // follow the element's width instead of the drawing being scaled to it.
  const width = Math.round(svg.clientWidth) || WIDTH_FALLBACK;
  svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
  svg.replaceChildren();
  const peak = Math.max(1, ...buckets.map((b) => b.units));
  const plot = HEIGHT - AXIS;
  const slot = Math.min(width / buckets.length, BAR_SLOT_MAX);
  // Right-aligned: the newest bar is always at the right edge.
  const x0 = width - slot * buckets.length;
  svg.append(el("line", { x1: 0, y1: plot, x2: width, y2: plot, class: "axis" }));
  buckets.forEach((b, i) => {
    const h = b.units === 0 ? 0 : Math.max(2, (b.units / peak) * (plot - 14));
    const bar = el("rect", {
      x: (x0 + i * slot + 1).toFixed(1),
      y: (plot - h).toFixed(1),
      width: Math.max(1, slot - 2).toFixed(1),
      height: h.toFixed(1),
      class: "bar",
      "data-units": b.units,
    });
    const tip = el("title", {});
    tip.textContent = `${time(b.start)}: ${label(b.units)}`;
    bar.append(tip);
    svg.append(bar);
  });
  const peakText = el("text", { x: 4, y: 11, class: "scale" });
  peakText.textContent = label(peak);
  const to = el("text", { x: width, y: HEIGHT - 4, class: "scale end" });
  to.textContent = time(buckets[buckets.length - 1].start);
  svg.append(peakText, to);
  // The first bar's time, where there is room for it beside the last's.
  if (width - x0 >= 160) {
    const from = el("text", { x: x0, y: HEIGHT - 4, class: "scale" });
    from.textContent = time(buckets[0].start);
    svg.append(from);
  }
}
