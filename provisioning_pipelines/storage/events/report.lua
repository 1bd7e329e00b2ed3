-- KEYS: record hash, event stream. ARGV: ttl_ms, outcome, detail, has_detail ('1' or '0').
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'dagster_report', ARGV[2])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'dagster_report_detail', ARGV[3])
else
  redis.call('HDEL', KEYS[1], 'dagster_report_detail')
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
