-- KEYS: record hash, event stream, and (optional) the owner's index of operations (sorted set).
-- ARGV: ttl_ms, created_ms (the index score), then field/value pairs of the record.
-- The record names its owner's index, so that every later write can refresh the index's TTL.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if KEYS[3] then
  redis.call('HSET', KEYS[1], 'owner_index', KEYS[3])
  redis.call('ZADD', KEYS[3], ARGV[2], KEYS[1])
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
return 1
