//! The Lua scripts of a multi-node deployment. Each touches the keys of
//! one slot only (Redis Cluster refuses anything else), reads the time from
//! Redis (`TIME`), and is idempotent where a client may retry it: cluster
//! clients retry a command on a moved slot or a lost reply, so an operation
//! that moves units carries an id, and a repeat of the last id gets the
//! first answer instead of applying twice.
//!
//! `redis::Script` sends `EVALSHA` and loads the script on `NOSCRIPT` (a
//! master that failed over, or a `SCRIPT FLUSH`), so a missing script is
//! handled, not an error.

use redis::Script;
use std::sync::LazyLock;

/// Redis time in ms, as the first lines of every script that needs it.
const NOW: &str = "local t = redis.call('TIME')\n\
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// A Lua function: the unleased units of every channel bucket of the SKU
/// whose definition is `def`, as `id:quota:headroom` joined by commas
/// (`-` for the headroom of an uncapped channel; empty without channels).
/// Published with the pool, so every node's global counts see them.
const FREE: &str = "local function free(def)
  local list = redis.call('HGET', def, 'channels')
  if not list or list == '' then return '' end
  local out = {}
  for c in string.gmatch(list, '[^,]+') do
    local f = redis.call('HMGET', def, 'q:' .. c, 'a:' .. c)
    table.insert(out, c .. ':' .. (f[1] or '0') .. ':' .. (f[2] or '-'))
  end
  return table.concat(out, ',')
end
";

/// Takes a node's ownership at start. KEYS: owner, journal record.
/// ARGV: instance, ttl_ms. Refuses (`busy`) while another live instance
/// owns the node (one that stopped and resigned does not count); otherwise
/// bumps the epoch (fencing any previous owner or adopter) and returns
/// `{ok, epoch, now}`.
pub static OWN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}
local o = redis.call('HMGET', KEYS[1], 'instance', 'until_ms', 'adopted_by', 'resigned')
local until_ms = tonumber(o[2]) or 0
if o[1] and o[1] ~= ARGV[1] and (not o[3]) and (not o[4]) and until_ms > now then
  return {{'busy', o[1], until_ms - now}}
end
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
redis.call('HSET', KEYS[1], 'instance', ARGV[1], 'until_ms', now + tonumber(ARGV[2]), 'epoch', epoch)
redis.call('HDEL', KEYS[1], 'adopted_by', 'resigned')
return {{'ok', epoch, now}}"
    ))
});

/// A node that stopped cleanly (its journal written, nothing of it
/// running) marks its ownership resigned, so a restart of the node takes
/// it at once instead of waiting out the ttl; the ownership still lasts to
/// its `until_ms` for everyone else (no adoption before then). KEYS:
/// owner, journal record. ARGV: instance, epoch. 1 if marked, 0 if the
/// node is no longer this process's.
pub static RESIGN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0') ~= tonumber(ARGV[2]) then return 0 end
if redis.call('HGET', KEYS[1], 'instance') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'resigned', '1')
return 1",
    )
});

/// Renews an ownership (the owner's, or an adopter's). KEYS: owner,
/// journal record. ARGV: epoch, ttl_ms. `{fenced, epoch}` once another
/// epoch took over; else `{ok, now}`.
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}
local e = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0')
if e ~= tonumber(ARGV[1]) then return {{'fenced', e}} end
redis.call('HSET', KEYS[1], 'until_ms', now + tonumber(ARGV[2]))
return {{'ok', now}}"
    ))
});

/// Adopts a node whose ownership lapsed. KEYS: owner, journal record.
/// ARGV: adopting node, ttl_ms. `{alive, adopted_by}` while it lasts; else
/// bumps the epoch (the node's journal writes are fenced from here on) and
/// returns `{ok, epoch}`.
pub static ADOPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}
local o = redis.call('HMGET', KEYS[1], 'until_ms', 'adopted_by')
if (tonumber(o[1]) or 0) > now then return {{'alive', o[2] or ''}} end
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
redis.call('HSET', KEYS[1], 'until_ms', now + tonumber(ARGV[2]), 'epoch', epoch, 'adopted_by', ARGV[1])
return {{'ok', epoch}}"
    ))
});

/// Creates a SKU if it does not exist. KEYS: def. ARGV: total,
/// buyer_limit, hold_ttl_ms, hold_lifetime_max_ms, order_units_max,
/// window, opens_at_ms, meta, then `id, quota, cap` per sales channel
/// (`cap` empty for none). Each channel's quota comes out of the pool into
/// its own bucket `q:<id>`; a capped channel's headroom starts as its cap in
/// `a:<id>`; `cq:`/`cc:` keep the configured quota and cap. 1 if created,
/// 0 if it existed.
pub static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local pool, list = tonumber(ARGV[1]), {}
for i = 9, #ARGV, 3 do
  pool = pool - tonumber(ARGV[i + 1])
end
if pool < 0 then return redis.error_reply('quotas above the total') end
for i = 9, #ARGV, 3 do
  local c, q = ARGV[i], ARGV[i + 1]
  table.insert(list, c)
  redis.call('HSET', KEYS[1], 'q:' .. c, q, 'cq:' .. c, q)
  if ARGV[i + 2] ~= '' then redis.call('HSET', KEYS[1], 'a:' .. c, ARGV[i + 2], 'cc:' .. c, ARGV[i + 2]) end
end
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'pool', pool, 'version', 1,
  'buyer_limit', ARGV[2], 'hold_ttl_ms', ARGV[3], 'hold_lifetime_max_ms', ARGV[4],
  'order_units_max', ARGV[5], 'window', ARGV[6], 'opens_at_ms', ARGV[7], 'meta', ARGV[8],
  'channels', table.concat(list, ','))
return 1",
    )
});

/// Grants units to a node from one of a SKU's buckets, or takes units
/// back. KEYS: def, lease. ARGV: node, op id, `grant`|`return`, units, the
/// least a grant may be (else it grants none), live nodes, channel, the
/// bucket's field in the definition (`pool`, `q:<channel>` for a channel's
/// quota, `a:<channel>` for a capped channel's headroom) and its suffix in
/// the ledger (empty for the pool, `:q:<channel>`, `:a:<channel>`).
///
/// A grant is `min(asked, bucket, cap)` with `cap = max(least, bucket /
/// (4 × nodes))`, so one node cannot starve the others; one that falls
/// short publishes `w` (demand), and nodes holding idle units return them.
/// A return moves units back (never more than the node holds of that
/// bucket). Answers `{ok, 'moved:bucket:version:granted:returned', free}`
/// (`free`: every channel bucket's unleased units, see `FREE`), the same
/// answer again for a repeated op id (`{dup, ...}`; op ids are per node
/// and SKU, shared by its buckets), `{nosku}`, or `{nobucket}` (no such
/// channel, or it has no cap).
pub static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FREE}
local node, op, kind = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local n, least, nodes = tonumber(ARGV[4]), tonumber(ARGV[5]), math.max(1, tonumber(ARGV[6]))
local b, sfx = ARGV[8], ARGV[9]
local f = redis.call('HMGET', KEYS[2], node .. ':g' .. sfx, node .. ':r' .. sfx, node .. ':op', node .. ':res')
local g, r, last = tonumber(f[1]) or 0, tonumber(f[2]) or 0, tonumber(f[3]) or -1
if op <= last then return {{'dup', f[4] or '', free(KEYS[1])}} end
local d = redis.call('HMGET', KEYS[1], b, 'version', 'pool')
if not d[2] then return {{'nosku'}} end
if not d[1] then return {{'nobucket'}} end
local have, v = tonumber(d[1]), tonumber(d[2]) + 1
local moved = 0
if kind == 'grant' then
  local cap = math.max(least, math.floor(have / (4 * nodes)))
  moved = math.min(n, have, cap)
  if moved < least then moved = 0 end
  have = have - moved
  g = g + moved
  if moved < n then redis.call('SPUBLISH', ARGV[7], 'w|' .. node .. '|' .. (n - moved)) end
else
  moved = math.min(n, g - r)
  have = have + moved
  r = r + moved
end
local res = moved .. ':' .. have .. ':' .. v .. ':' .. g .. ':' .. r
redis.call('HSET', KEYS[1], b, have, 'version', v)
redis.call('HSET', KEYS[2], node .. ':g' .. sfx, g, node .. ':r' .. sfx, r, node .. ':op', op, node .. ':res', res)
local pool = d[3]
if b == 'pool' then pool = have end
local fr = free(KEYS[1])
if moved > 0 then redis.call('SPUBLISH', ARGV[7], 'p|' .. pool .. '|' .. v .. '|' .. fr) end
return {{'ok', res, fr, pool}}"
    ))
});

/// Publishes a node's counts of one SKU. KEYS: counts, def. ARGV: node,
/// available, held, sold, seq, channel, and the node's channel part (see
/// [`super::counts::NodeChannels`]; empty for a SKU without channels).
/// Stores them (for snapshots, as `available:held:sold:seq|part`) and
/// publishes `c|node|available|held|sold|seq|pool|version|free|part`;
/// returns the SKU's version.
pub static COUNTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FREE}
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4] .. ':' .. ARGV[5] .. '|' .. ARGV[7])
local d = redis.call('HMGET', KEYS[2], 'pool', 'version')
redis.call('SPUBLISH', ARGV[6], 'c|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4] .. '|' .. ARGV[5] .. '|' .. (d[1] or 0) .. '|' .. (d[2] or 0) .. '|' .. free(KEYS[2]) .. '|' .. ARGV[7])
return tonumber(d[2] or 0)"
    ))
});

/// A host's change to a SKU. KEYS: def. ARGV: kind (`restock`, `adjust`,
/// `total`, `fields`, `channel`, `move`), units, channel, max units, then
/// field/value pairs (`fields`), or for `channel` the channel's id, its
/// quota (empty: keep) and its cap (empty: none, `keep`: keep), or for
/// `move` the channel's id and the signed units to move into its quota.
/// Restock adds to the pool; adjust removes from the pool only (leased
/// units are the nodes'); a new total keeps what nodes hold and the
/// quotas. A channel's quota grows from the unleased pool and shrinks by
/// its unleased quota units; a cap changes its unleased headroom by the
/// difference (a cap can be set on a channel only when it is added: the
/// units it already used are counted on the nodes). Answers
/// `{ok, total, pool, version}`, `{short, pool}` (not enough unleased
/// units), `{shortq, quota}` (not enough unleased quota units),
/// `{capshort, headroom}` (the cap's headroom is leased to nodes),
/// `{capnew}`, `{nochannel}`, `{above, total}` or `{nosku}`; publishes
/// `d|version|pool` so every node reloads the definition.
pub static ADMIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FREE}
local d = redis.call('HMGET', KEYS[1], 'total', 'pool', 'version', 'channels')
if not d[1] then return {{'nosku'}} end
local total, pool, v = tonumber(d[1]), tonumber(d[2]), tonumber(d[3]) + 1
local kind, x, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
if kind == 'restock' then
  if total + x > max then return {{'above', total}} end
  total = total + x
  pool = pool + x
elseif kind == 'adjust' then
  if x > pool then return {{'short', pool}} end
  total = total - x
  pool = pool - x
elseif kind == 'total' then
  local leased = total - pool
  if x < leased then return {{'short', pool}} end
  pool = x - leased
  total = x
elseif kind == 'channel' or kind == 'move' then
  local c, list = ARGV[5], d[4] or ''
  local known = false
  for id in string.gmatch(list, '[^,]+') do
    if id == c then known = true end
  end
  if kind == 'move' and not known then return {{'nochannel'}} end
  local f = redis.call('HMGET', KEYS[1], 'q:' .. c, 'cq:' .. c, 'a:' .. c, 'cc:' .. c)
  local q, cq, a, cc = tonumber(f[1]) or 0, tonumber(f[2]) or 0, tonumber(f[3]), tonumber(f[4])
  local delta = 0
  if kind == 'move' then
    delta = tonumber(ARGV[6])
  elseif ARGV[6] ~= '' then
    delta = tonumber(ARGV[6]) - cq
  end
  if delta > pool then return {{'short', pool}} end
  if -delta > q then return {{'shortq', q}} end
  if kind == 'channel' and ARGV[7] ~= 'keep' then
    local cap = tonumber(ARGV[7])
    if cap and cc then
      if a + cap - cc < 0 then return {{'capshort', a}} end
      redis.call('HSET', KEYS[1], 'a:' .. c, a + cap - cc, 'cc:' .. c, cap)
    elseif cap then
      if known then return {{'capnew'}} end
      redis.call('HSET', KEYS[1], 'a:' .. c, cap, 'cc:' .. c, cap)
    elseif cc then
      redis.call('HDEL', KEYS[1], 'a:' .. c, 'cc:' .. c)
    end
  end
  if not known then
    if list == '' then list = c else list = list .. ',' .. c end
    redis.call('HSET', KEYS[1], 'channels', list)
  end
  pool = pool - delta
  redis.call('HSET', KEYS[1], 'q:' .. c, q + delta, 'cq:' .. c, cq + delta)
end
if kind ~= 'channel' and kind ~= 'move' then
  for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('HSET', KEYS[1], 'total', total, 'pool', pool, 'version', v)
redis.call('SPUBLISH', ARGV[3], 'd|' .. v .. '|' .. pool)
redis.call('SPUBLISH', ARGV[3], 'p|' .. pool .. '|' .. v .. '|' .. free(KEYS[1]))
return {{'ok', total, pool, v}}"
    ))
});

/// Rebuilds a SKU's pool and lease ledger from what the nodes hold (see
/// [`super::rebuild`]). KEYS: def, lease. ARGV: rebuild id, channel, the
/// highest version any answering node saw, then `node, units, op` triples:
/// each answering node's local stock (available + held + sold) and an
/// operation id above every one it sent before. A node not listed keeps
/// its ledger (granted − returned). Every listed node's claim must still
/// carry this rebuild id (`stale` otherwise: a newer rebuild runs). Sets
/// each listed node's granted to returned + units and its last operation
/// to `op` (an older operation still on its way then lands as a repeat, not
/// applied: its effect is in the claim already), the pool to
/// total − every node's units (0 and `oversold` > 0 if the nodes hold more
/// than the total), a version above every one seen, and `rebuilt` = the
/// id; publishes the pool. Answers `{ok, pool, version, oversold}`,
/// `{stale}` or `{nosku}`.
pub static REBUILD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FREE}
local d = redis.call('HMGET', KEYS[1], 'total', 'version')
if not d[1] then return {{'nosku'}} end
local total, v = tonumber(d[1]), math.max(tonumber(d[2]), tonumber(ARGV[3])) + 1
local listed, held = {{}}, 0
local ops = {{}}
for i = 4, #ARGV, 3 do
  local node, units = ARGV[i], tonumber(ARGV[i + 1])
  local claim = redis.call('HGET', KEYS[2], node .. ':claim') or ''
  if string.sub(claim, 1, #ARGV[1] + 1) ~= ARGV[1] .. ':' then return {{'stale'}} end
  listed[node] = units
  ops[node] = tonumber(ARGV[i + 2])
end
local l = redis.call('HGETALL', KEYS[2])
local g, r = {{}}, {{}}
for i = 1, #l, 2 do
  local node, kind = string.match(l[i], '^(%d+):(%a+)$')
  if kind == 'g' then g[node] = tonumber(l[i + 1]) end
  if kind == 'r' then r[node] = tonumber(l[i + 1]) end
end
for node, granted in pairs(g) do
  if not listed[node] then held = held + granted - (r[node] or 0) end
end
-- Channel quotas are not rebuilt: their units, leased or not, stay theirs.
for i = 1, #l, 2 do
  local kind = string.match(l[i], '^%d+:(%a):q:')
  if kind == 'g' then held = held + tonumber(l[i + 1]) end
  if kind == 'r' then held = held - tonumber(l[i + 1]) end
end
for c in string.gmatch(redis.call('HGET', KEYS[1], 'channels') or '', '[^,]+') do
  held = held + tonumber(redis.call('HGET', KEYS[1], 'q:' .. c) or '0')
end
for node, units in pairs(listed) do
  held = held + units
  local last = tonumber(redis.call('HGET', KEYS[2], node .. ':op') or '-1')
  redis.call('HSET', KEYS[2], node .. ':g', (r[node] or 0) + units, node .. ':op', math.max(last, ops[node]))
  redis.call('HDEL', KEYS[2], node .. ':claim')
end
local pool, oversold = total - held, 0
if pool < 0 then oversold, pool = -pool, 0 end
redis.call('HSET', KEYS[1], 'pool', pool, 'version', v, 'rebuilt', ARGV[1])
redis.call('SPUBLISH', ARGV[2], 'p|' .. pool .. '|' .. v .. '|' .. free(KEYS[1]))
return {{'ok', pool, v, oversold}}"
    ))
});

/// Withdraws a request's claim if it still names the same first attempt.
/// KEYS: the claim. ARGV: the value that was read. Returns 1 if removed.
pub static UNCLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
    )
});
