-- common.lua: a Redis script of django_pulse.presence (loaded by django_pulse._lua.load_lua).
-- Builds the member object and the presence frame exactly like protocol.member_json / presence_frame.
local function member_json(conn_json, value)
  local p1 = string.find(value, '\t', 1, true)
  local p2 = string.find(value, '\t', p1 + 1, true)
  local p3 = string.find(value, '\t', p2 + 1, true)
  local ts = string.sub(value, p1 + 1, p2 - 1)
  return '{"clientId":' .. string.sub(value, p2 + 1, p3 - 1) .. ',"connectionId":' .. conn_json ..
         ',"data":' .. string.sub(value, p3 + 1) .. ',"timestamp":' .. ts .. '}',
         string.sub(value, 1, p1 - 1), ts
end
local function frame(channel, event, member, serial)
  return '{"action":"presence","channel":"' .. channel .. '","event":"' .. event .. '","member":' .. member ..
         ',"serial":' .. serial .. '}'
end
-- Whether a clientId-JSON is an anonymous visitor's (presence.base.is_anonymous_client: "anon-..." minted by
-- POST token/anonymous/, "anonymous-..." of a session-less SSE stream).
local function is_anonymous(client_json)
  return string.sub(client_json, 1, 6) == '"anon-' or string.sub(client_json, 1, 11) == '"anonymous-'
end
