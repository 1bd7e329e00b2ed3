-- KEYS: record hash, event stream. ARGV: ttl_ms, outcome, detail, has_detail ('1' or '0').
-- Refreshes the TTL as transition.lua does, the owner's index included.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'dagster_report', ARGV[2])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'dagster_report_detail', ARGV[3])
else
  redis.call('HDEL', KEYS[1], 'dagster_report_detail')
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
local owner = redis.call('HGET', KEYS[1], 'owner_index')
if owner then redis.call('PEXPIRE', owner, ARGV[1]) end
return 1
