-- KEYS: record hash, event stream.
-- ARGV: allowed statuses (",a,b,"), new status, event type, message, percent ('' = keep),
--       timestamp, event extra (JSON), ttl_ms, then field/value pairs for the record.
-- Check, HSET, XADD and PEXPIRE run as one step: racing writers cannot both pass the check.
-- The owner's index, named in the record (a key the script is not given: one Redis, not a
-- cluster), gets the same TTL, so it lives as long as every operation it lists.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if not string.find(ARGV[1], ',' .. status .. ',', 1, true) then return false end
local progress = tonumber(redis.call('HGET', KEYS[1], 'progress')) or 0
if ARGV[5] ~= '' then progress = math.max(progress, tonumber(ARGV[5])) end
progress = tostring(progress)
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'progress', progress, 'message', ARGV[4],
           'updated_at', ARGV[6])
if #ARGV > 8 then redis.call('HSET', KEYS[1], unpack(ARGV, 9)) end
local id = redis.call('XADD', KEYS[2], '*', 'type', ARGV[3], 'status', ARGV[2],
                      'progress', progress, 'message', ARGV[4], 'timestamp', ARGV[6],
                      'extra', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
local owner = redis.call('HGET', KEYS[1], 'owner_index')
if owner then redis.call('PEXPIRE', owner, ARGV[8]) end
return {id, progress}
