"""
The Lua scripts of the Redis guard and rate limiter, each one atomic step on Redis.

The guard's keys per customer: `KEYS[1]` the claim (a token, with a TTL), `KEYS[2]` the recorded
state (`claimed` while a first pay runs, else an outcome state), `KEYS[3]` when a doubt was last
written (Redis time, ms). The state names come from `freedompay_async.facts`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from freedompay_async.facts import UNSETTLED_STATES

if TYPE_CHECKING:
    from freedompay_async.facts import OutcomeState

__all__ = ["CLAIM", "CLAIMED", "DOUBT_STATES", "FINISH", "RELEASE", "RENEW", "TAKE"]

#: The recorded state of a customer whose first pay is running (or whose worker died).
CLAIMED: Final = "claimed"
#: Recorded states that leave the pay's fate open: the next claimer settles by status first.
DOUBT_STATES: Final = frozenset({CLAIMED, *UNSETTLED_STATES})
#: The outcome state that says nothing was charged: the claim is released, nothing recorded.
_NOTHING_CHARGED: Final[OutcomeState] = "error"


def _lua_any_equal(variable: str, values: frozenset[str] | tuple[str, ...]) -> str:
    return " or ".join(f"{variable} == '{value}'" for value in sorted(values))


def _fill(script: str) -> str:
    return (
        script.replace("$RECORD_IN_DOUBT", _lua_any_equal("record", DOUBT_STATES))
        .replace("$STATE_UNSETTLED", _lua_any_equal("ARGV[2]", UNSETTLED_STATES))
        .replace("$NOTHING_CHARGED", _NOTHING_CHARGED)
        .replace("$CLAIMED", CLAIMED)
    )


CLAIM: Final = _fill(
    """
local record = redis.call('GET', KEYS[2])
if record and not ($RECORD_IN_DOUBT) then
  return {'settled', record}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'busy', record or ''}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if record then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  local wrote = redis.call('GET', KEYS[3])
  local age = -1
  if wrote and record ~= '$CLAIMED' then
    local t = redis.call('TIME')
    age = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(wrote)
  end
  return {'reclaim', record, age}
end
redis.call('SET', KEYS[2], '$CLAIMED', 'PX', ARGV[3])
return {'fresh', ''}
"""
)

FINISH: Final = _fill(
    """
local owned = redis.call('GET', KEYS[1]) == ARGV[1]
if owned then redis.call('DEL', KEYS[1]) end
if ARGV[2] == '$NOTHING_CHARGED' then
  if owned and redis.call('GET', KEYS[2]) == '$CLAIMED' then redis.call('DEL', KEYS[2]) end
else
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  if $STATE_UNSETTLED then
    local t = redis.call('TIME')
    redis.call('SET', KEYS[3], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
               'PX', ARGV[3])
  end
end
if owned then return 1 end
return 0
"""
)

RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# Token bucket with reservations. Tokens may go negative: -tokens requests are already waiting
# for their slot, so a new one waits (1 - tokens) / rate. A reservation that would wait longer
# than ARGV[3] microseconds is not taken; the caller learns the wait (as a negative number).
TAKE: Final = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
local last = tonumber(redis.call('HGET', KEYS[1], 'at'))
if tokens == nil or last == nil then
  tokens = burst
  last = now
end
if now > last then
  tokens = math.min(burst, tokens + (now - last) * rate / 1000000)
  last = now
end
tokens = tokens - 1
local wait = 0
if tokens < 0 then wait = math.ceil(-tokens * 1000000 / rate) end
if wait > max_wait then return -wait end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'at', string.format('%.0f', last))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return wait
"""
