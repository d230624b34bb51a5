# Draws docs/img/perf-before-after.svg from the figures in docs/PERFORMANCE.md
# ("Changes, before and after"). Run: python3 benches/scripts/perf_chart.py
# Before/after chart for docs/PERFORMANCE.md: pairs/s as a ratio to the
# unpipelined Redis-Lua row of the same `compare` run.
rows = [
    ("engine, 1 thread", 95, 153),
    ("engine, 2 threads, one SKU", 47, 210),
    ("gateway websocket, in memory", 2.19, 7.12),
    ("gateway websocket, durable", 0.86, 1.77),
]
import math
W, H = 760, 330
left, right, top, bar, gap = 250, 40, 50, 14, 26
x0 = left
span = W - left - right
def x(v):  # log10 scale from 0.5x to 300x
    lo, hi = math.log10(0.5), math.log10(300)
    return x0 + (math.log10(v) - lo) / (hi - lo) * span
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
       '<rect width="100%" height="100%" fill="white"/>',
       f'<text x="{W/2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">pairs/s as a multiple of the unpipelined Redis-Lua baseline (same run, log scale)</text>']
for t in [0.5, 1, 3, 10, 30, 100, 300]:
    xx = x(t)
    out.append(f'<line x1="{xx:.1f}" y1="{top-8}" x2="{xx:.1f}" y2="{H-50}" stroke="#ddd"/>')
    out.append(f'<text x="{xx:.1f}" y="{H-36}" text-anchor="middle" fill="#555">{t}×</text>')
xx = x(1)
out.append(f'<line x1="{xx:.1f}" y1="{top-8}" x2="{xx:.1f}" y2="{H-50}" stroke="#999" stroke-dasharray="4 3"/>')
y = top
for name, before, after in rows:
    out.append(f'<text x="{left-8}" y="{y+bar+4}" text-anchor="end">{name}</text>')
    for v, color, dy, label in [(before, "#b0b7c3", 0, "before"), (after, "#2f6fdb", bar + 2, "after")]:
        out.append(f'<rect x="{x(0.5):.1f}" y="{y+dy}" width="{x(v)-x(0.5):.1f}" height="{bar}" fill="{color}"/>')
        out.append(f'<text x="{x(v)+4:.1f}" y="{y+dy+bar-3}" fill="#333">{v:g}×</text>')
    y += 2 * bar + gap
ly = H - 18
out.append(f'<rect x="{left}" y="{ly-10}" width="12" height="12" fill="#b0b7c3"/><text x="{left+18}" y="{ly}">first measurement (10:05 UTC)</text>')
out.append(f'<rect x="{left+230}" y="{ly-10}" width="12" height="12" fill="#2f6fdb"/><text x="{left+248}" y="{ly}">after the changes below (10:44 UTC)</text>')
out.append('</svg>')
open('/work/main/docs/img/perf-before-after.svg', 'w').write("\n".join(out))
