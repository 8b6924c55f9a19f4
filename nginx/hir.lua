-- Lua glue for the router's lua mode (DESIGN.md): ask the sidecar, then forward.
-- Loaded once per worker via lua_package_path; keep per-request work minimal.
local cjson = require "cjson.safe"

local ngx = ngx
local var = ngx.var
local req = ngx.req
local capture = ngx.location.capture
local exec = ngx.exec
local sub, lower, tonumber, find = string.sub, string.lower, tonumber, string.find
local concat, min = table.concat, math.min

local M = {}

-- Sidecar response headers a client must never see.
local INTERNAL = {
    ["x-route-decision"] = true, ["x-accel-redirect"] = true, ["server"] = true,
    ["date"] = true, ["content-length"] = true, ["connection"] = true,
    ["keep-alive"] = true, ["transfer-encoding"] = true, ["x-constitutional-hash"] = true,
}

local DECIDE = { method = ngx.HTTP_POST, always_forward_body = true }

-- A client may not send headers named like the router's own decision headers.
-- Returns false if the request repeats Content-Type: the subrequest would show the
-- sidecar only one of them, while a provider could read the other.
local function drop_internal_request_headers()
    local headers = req.get_headers(0, true)  -- 0: every header, not the first 100
    local ok = true
    for name, value in pairs(headers) do
        local low = lower(name)
        if sub(low, 1, 8) == "x-route-" then
            req.clear_header(name)
        elseif low == "content-type" and type(value) == "table" then
            ok = false
        end
    end
    return ok
end

-- Read the body within the request deadline ($hir_request_timeout seconds from the
-- request's first byte). nginx's own client_body_timeout is per read, so a client
-- dripping a byte a second would hold the request for ever; here the whole body
-- must arrive in time. A body without Content-Length (chunked ones are refused
-- with 411 before this) is read by nginx and the deadline checked once it is in.
local function read_body_in_time()
    local deadline = req.start_time() + tonumber(var.hir_request_timeout)
    local read_timeout = tonumber(var.hir_read_timeout_ms)
    local length = tonumber(var.http_content_length)
    if not length or length == 0 then
        req.read_body()
        ngx.update_time()
        return ngx.now() <= deadline
    end
    local sock = req.socket()
    if not sock then  -- body already read (e.g. after an internal redirect)
        req.read_body()
        return true
    end
    local parts, got = {}, 0
    while got < length do
        ngx.update_time()
        local left = deadline - ngx.now()
        if left <= 0 then
            return false
        end
        -- Each read also gets nginx's own per-read bound (client_body_timeout).
        sock:settimeout(min(left * 1000, read_timeout))
        local data, err = sock:receiveany(min(length - got, 65536))
        if not data then
            if err == "timeout" then
                return false
            end
            return nil
        end
        got = got + #data
        parts[#parts + 1] = data
    end
    req.init_body(length)
    req.append_body(concat(parts))
    req.finish_body()
    return true
end

function M.route()
    if not drop_internal_request_headers() then
        return ngx.exit(ngx.HTTP_BAD_REQUEST)
    end
    local in_time = read_body_in_time()
    if in_time == false then
        -- Answer 408 and close at once: ngx.exit(408) closes without an answer, and
        -- an error page would first wait to discard the rest of the dripping body.
        local body = var.hir_timeout_body
        ngx.status = ngx.HTTP_REQUEST_TIMEOUT
        ngx.header["Content-Type"] = "application/json"
        ngx.header["Content-Length"] = #body
        ngx.print(body)
        ngx.flush(true)
        return ngx.exit(444)
    elseif in_time == nil then
        return ngx.exit(ngx.HTTP_BAD_REQUEST)  -- the client went away or sent less than it said
    end
    -- nginx's own id (the client's X-Request-Id may repeat): settles what admission reserved.
    req.set_header("X-Hir-Internal-Id", var.request_id)
    local res = capture("/_decide", DECIDE)
    local status, h = res.status, res.header

    local decision = h["X-Route-Decision"]
    if status == 200 and not res.truncated and decision ~= "answer" then
        local endpoint = h["X-Route-Endpoint"]
        local target = h["X-Accel-Redirect"]
        -- Only the forwarding locations (one per tier, buffered or streaming).
        if endpoint and target and (find(target, "^@buffered_[a-z][a-z0-9-]*$")
                                    or find(target, "^@stream_[a-z][a-z0-9-]*$")) then
            var.route_endpoint = endpoint
            var.route_auth = h["X-Route-Auth"] or ""
            var.route_path = h["X-Route-Path"] or ""
            var.route_fallback = h["X-Route-Fallback"] or ""
            var.route_fallback_auth = h["X-Route-Fallback-Auth"] or ""
            var.route_fallback2 = h["X-Route-Fallback2"] or ""
            var.route_fallback2_auth = h["X-Route-Fallback2-Auth"] or ""
            var.route_ratelimit = h["X-Route-RateLimit"] or ""
            var.route_ratelimit_policy = h["X-Route-RateLimit-Policy"] or ""
            var.route_rule = h["X-Route-Rule"] or ""
            var.route_strip_usage = h["X-Route-Strip-Usage"] or ""
            var.route_tenant = h["X-Route-Tenant"] or ""
            var.route_features = h["X-Route-Features"] or ""
            var.route_shadow = h["X-Route-Shadow"] or ""
            var.route_shadow_auth = h["X-Route-Shadow-Auth"] or ""
            var.route_cache_key = h["X-Route-Cache-Key"] or ""
            var.route_cache_refresh = h["X-Route-Cache-Refresh"] or ""
            local at = h["X-Route-Model-At"]
            if at and res.body ~= "" then
                var.route_model_at = at
                req.set_body_data(res.body)
            end
            -- The router's own time so far (body read + decision), for Server-Timing.
            ngx.update_time()
            var.route_overhead_ms = string.format("%.1f", (ngx.now() - req.start_time()) * 1000)
            return exec(target)
        end
    elseif (status >= 400 and status < 500 and decision == "deny")
        or (status == 200 and decision == "answer" and not res.truncated) then
        -- A refusal, or the router's own answer (GET /v1/models): to the client as is.
        ngx.status = status
        for name, value in pairs(h) do
            if not INTERNAL[lower(name)] then
                ngx.header[name] = value
            end
        end
        ngx.header["Content-Length"] = #res.body
        ngx.print(res.body)
        return ngx.exit(ngx.HTTP_OK)
    end

    ngx.log(ngx.WARN, "sidecar failed (status ", status, "); applying failover")
    return exec("@sidecar_failed")
end

-- Upstream response headers: only the allow-list ($hir_pass_response_headers plus
-- framing) reaches the client. Runs before add_header, so the router's own headers
-- (security set, hash, version, rate limits) are added after and are the only copies.
local allow_cache = {}

local function allowed_set(list)
    local set = allow_cache[list]
    if not set then
        set = {}
        for name in string.gmatch(list, "[^,]+") do
            set[name] = true
        end
        allow_cache[list] = set
    end
    return set
end

-- The endpoint's answer replaced by the router's JSON error (upstream_body writes
-- ngx.ctx.hir_replacement in place of the endpoint's bytes).
local function replace_answer(kind, code, message)
    local body = '{"error":{"message":"' .. message .. '","type":"' .. kind
        .. '","param":null,"code":"' .. code .. '"}}'
    ngx.ctx.hir_replacement = body
    -- With the charset written out: nginx keeps the page's own charset apart and
    -- would append it to a bare type.
    ngx.header["Content-Type"] = "application/json; charset=utf-8"
    ngx.header["Content-Length"] = #body
    ngx.header["Content-Encoding"] = nil
end

function M.upstream_headers()
    -- nginx turns an answer without a valid status line into HTTP/0.9 and would
    -- write the endpoint's bytes to the client unframed; send a 502 instead.
    if req.http_version() == 0.9 then
        ngx.ctx.hir_replacement = var.hir_unframed_response
        ngx.log(ngx.ERR, "endpoint ", var.route_endpoint, " answered without HTTP framing")
        return
    end
    -- An endpoint's error that is not JSON (a reverse proxy's or a CDN's HTML page, an
    -- empty body) becomes the router's JSON error with the same status: a client of
    -- these APIs parses every error body. (Its 3xx and 5xx never get here: error_page.)
    -- A success that is neither JSON nor a stream (a captive portal's or a WAF's page),
    -- or a status past 599, is no answer at all: 502.
    local status = ngx.status
    local ctype = lower(ngx.header["Content-Type"] or "")
    if status >= 600 then   -- no HTTP status (nginx's error_page cannot take it either)
        ngx.status = 502
        replace_answer("server_error", "upstream_failed",
                       "The model endpoint answered a status HTTP does not define.")
    elseif status >= 400 and not find(ctype, "json", 1, true) then
        replace_answer("invalid_request_error", "upstream_error",
                       "The model endpoint answered " .. status .. " without a JSON body.")
    elseif status < 300 and ctype ~= "" and not find(ctype, "json", 1, true)
            and not find(ctype, "event-stream", 1, true) then
        ngx.status = 502
        replace_answer("server_error", "upstream_failed",
                       "The model endpoint answered with a page, not an API answer.")
    end
    local allowed = allowed_set(var.hir_pass_response_headers)
    for name in pairs(ngx.resp.get_headers(0, true)) do
        if not allowed[lower(name)] then
            ngx.header[name] = nil
        end
    end
    ngx.header["Server"] = nil
end

-- Token usage from the answer: OpenAI-style bodies put "usage" last, and a
-- stream's usage chunk comes just before [DONE], so the last KiB is almost always
-- enough; a Responses object echoes the request's metadata (up to ~9 KB) after its
-- usage, so the last chunks up to WIDE_TAIL are searched when the last KiB has none.
-- An Anthropic stream reports its input in message_start, its first event, and may
-- end with only output_tokens in message_delta, so the first chunks are kept too.
local TAIL, WIDE_TAIL, HEAD = 1024, 16384, 4096
local match = string.match
local P_PROMPT = '"prompt_tokens"%s*:%s*(%d+)'
local P_COMPLETION = '"completion_tokens"%s*:%s*(%d+)'
local P_INPUT = '"input_tokens"%s*:%s*(%d+)'
local P_OUTPUT = '"output_tokens"%s*:%s*(%d+)'
local P_CACHED = '"cached_tokens"%s*:%s*(%d+)'                   -- OpenAI: part of the input count
local P_CACHE_READ = '"cache_read_input_tokens"%s*:%s*(%d+)'      -- Anthropic: beside input_tokens
local P_CACHE_WRITE = '"cache_creation_input_tokens"%s*:%s*(%d+)'
local P_CACHE_WRITE_1H = '"ephemeral_1h_input_tokens"%s*:%s*(%d+)' -- of those, kept an hour
local P_WEB_SEARCHES = '"web_search_requests"%s*:%s*(%d+)'         -- Anthropic: server_tool_use

-- Where the last "usage" object starts; plain finds, then one anchored match per field
-- (a gmatch over the tail cost 6x more: 2 us per buffered answer instead of 13). Only an
-- object counts: a chunk's "usage":null is not one, nor a metadata key the request chose
-- and the answer echoes (its values are strings).
local function last_usage(text)
    local at, from = nil, 1
    while true do
        local s = find(text, '"usage"', from, true)
        if not s then
            return at
        end
        if find(text, '^%s*:%s*{', s + 7) then
            at = s
        end
        from = s + 7
    end
end

-- Anthropic counts cache reads and writes beside input_tokens; the router counts every
-- input token, and says which were cache reads and writes (they are priced apart, and
-- a write kept an hour, `cache_control.ttl: "1h"`, apart from one kept five minutes).
local function record_input(text, at, input)
    local read = match(text, P_CACHE_READ, at)
    local write = match(text, P_CACHE_WRITE, at)
    if read or write then
        read, write = tonumber(read) or 0, tonumber(write) or 0
        var.route_usage_prompt = tostring(tonumber(input) + read + write)
        var.route_usage_cache_read = tostring(read)
        var.route_usage_cache_write = tostring(write)
        if write > 0 then
            var.route_usage_cache_write_1h = match(text, P_CACHE_WRITE_1H, at) or ""
        end
    else  -- OpenAI's Responses API: input_tokens already counts its cached_tokens
        var.route_usage_prompt = input
        var.route_usage_cache_read = match(text, P_CACHED, at) or ""
    end
end

-- A Responses answer's id, which a follow-up names as previous_response_id: the
-- sidecar sends that follow-up to the endpoint that holds the conversation. The id
-- leads the object, or the response.created event that opens a stream. A retrieved
-- answer's id and usage are read too: a background response's usage arrives that way
-- (the sidecar counts it once, sidecar/edge/conversations.py).
local P_RESPONSE_ID = '"id"%s*:%s*"([%w_%-%.:]+)"'

local function record_response_id(ctx, text)
    local features = var.route_features or ""
    if sub(features, 1, 10) == "responses;" or sub(features, 1, 7) == "stored;" then
        local id = match(sub(text, 1, 512), P_RESPONSE_ID)
        if id and #id <= 128 then
            var.route_response_id = id
        elseif not ctx.hir_h2 then
            ctx.hir_id_pending = true   -- a stream's first read may end inside the id
        end
    end
end

local function record_usage(ctx, chunk, eof)
    -- Keep references to the first two and the last three chunks (no copying per
    -- chunk); the usage events are in them even if nginx split them.
    if chunk ~= "" then
        if not ctx.hir_h1 then
            ctx.hir_h1 = chunk
            record_response_id(ctx, chunk)
        elseif not ctx.hir_h2 then
            ctx.hir_h2 = chunk
            if ctx.hir_id_pending then
                record_response_id(ctx, ctx.hir_h1 .. sub(chunk, 1, 512))
            end
        end
        ctx.hir_c1, ctx.hir_c2, ctx.hir_c3 = ctx.hir_c2, ctx.hir_c3, chunk
    end
    local last = ctx.hir_c3
    if not (eof and last) then
        return
    end
    local text = #last >= TAIL and sub(last, -TAIL) or sub((ctx.hir_c1 or "") .. (ctx.hir_c2 or "") .. last, -TAIL)
    local at = last_usage(text)
    if not at then
        text = #last >= WIDE_TAIL and sub(last, -WIDE_TAIL)
            or sub((ctx.hir_c1 or "") .. (ctx.hir_c2 or "") .. last, -WIDE_TAIL)
        at = last_usage(text)
        if not at then
            return
        end
    end
    local prompt = match(text, P_PROMPT, at)
    if prompt then
        var.route_usage_prompt = prompt
        var.route_usage_completion = match(text, P_COMPLETION, at) or "0"
        var.route_usage_cache_read = match(text, P_CACHED, at) or ""
        return
    end
    -- Anthropic Messages and OpenAI Responses: input_tokens / output_tokens.
    local output = match(text, P_OUTPUT, at)
    if not output then
        return
    end
    local input = match(text, P_INPUT, at)
    if input then
        -- message_start's output_tokens is a placeholder (1): a stream cut before its
        -- message_delta has no output count, and the answer's bytes estimate it instead.
        if find(text, '"message_start"', 1, true) and not find(text, '"message_delta"', 1, true) then
            return
        end
        record_input(text, at, input)
    else  -- the input was reported when the stream started
        local head = sub(ctx.hir_h1 .. (ctx.hir_h2 or ""), 1, HEAD)
        local head_at = find(head, '"usage"', 1, true)
        input = head_at and match(head, P_INPUT, head_at)
        if not input then
            return
        end
        record_input(head, head_at, input)
    end
    var.route_usage_completion = output
    -- Searches a provider-run web search tool made, billed per search (the final usage
    -- of a stream, message_delta, carries them).
    var.route_usage_web_searches = match(text, P_WEB_SEARCHES, at) or ""
end

-- A stream that cannot finish (the endpoint went silent past its deadline, or
-- closed mid-stream) or ran past its tier's max_stream_s ends with an error event
-- both OpenAI's and Anthropic's SDKs raise on, never by hanging.
local function stream_error(message, code)
    return 'event: error\ndata: {"type":"error","error":{"message":"' .. message
        .. '","type":"server_error","param":null,"code":"' .. code .. '"}}\n\n'
end

local function end_broken_stream(ctx)
    if ctx.hir_stream_ended then
        ngx.arg[1] = ""
        return true
    end
    local chunk, eof = ngx.arg[1], ngx.arg[2]
    -- nginx finalizing a stream whose endpoint failed sends one empty flush, after it
    -- has set the hop's response time ("-" while the stream is still running).
    if chunk == "" and not eof then
        local times = var.upstream_response_time
        if times and times ~= "" and sub(times, -1) ~= "-" then
            ctx.hir_stream_ended = true
            ngx.arg[1] = stream_error("the model endpoint stopped before the answer was complete",
                                      "upstream_stream_interrupted")
            return true
        end
    end
    local max_s = tonumber(var.route_max_stream_s)
    if max_s and max_s > 0 and not eof and ngx.now() - req.start_time() > max_s then
        ctx.hir_stream_ended = true
        ngx.arg[1] = chunk .. stream_error("the answer ran past this tier's maximum stream duration ("
                                           .. max_s .. " s)", "stream_too_long")
        ngx.arg[2] = true
        return true
    end
    return false
end

-- The router asked a stream for its usage (stream_options.include_usage) on the
-- client's behalf: drop the usage-only event ("choices":[]) it did not ask for.
-- Events end with a blank line; a partial one waits for the next chunk.
local MAX_PENDING_EVENT = 65536

local function next_boundary(text, from)
    local s, e = find(text, "\n\n", from, true)
    local s2, e2 = find(text, "\r\n\r\n", from, true)
    if s2 and (not s or s2 < s) then
        return s2, e2
    end
    return s, e
end

local function strip_usage_event(ctx, chunk, eof)
    local text = (ctx.hir_pending or "") .. chunk
    local out, start = {}, 1
    while true do
        local _, e = next_boundary(text, start)
        if not e then
            break
        end
        local event = sub(text, start, e)
        -- Any spacing: servers that write JSON as Python's json module does send '"choices": []'.
        if not (find(event, '"choices"%s*:%s*%[%s*%]') and find(event, '"usage"%s*:%s*{')) then
            out[#out + 1] = event
        end
        start = e + 1
    end
    local rest = sub(text, start)
    if eof or #rest > MAX_PENDING_EVENT then
        out[#out + 1] = rest
        rest = ""
    end
    ctx.hir_pending = rest
    return concat(out)
end

function M.upstream_body()
    local ctx = ngx.ctx
    if ctx.hir_replacement then   -- written once, in place of the endpoint's bytes
        if ctx.hir_replaced then
            ngx.arg[1] = ""
            return
        end
        ctx.hir_replaced = true
        ngx.arg[1] = ctx.hir_replacement
        ngx.arg[2] = true
        return
    end
    if var.route_stream == "1" and ngx.status == 200 and end_broken_stream(ctx) then
        return
    end
    if ngx.status == 200 then
        record_usage(ctx, ngx.arg[1], ngx.arg[2])
        if var.route_strip_usage == "1" then
            ngx.arg[1] = strip_usage_event(ctx, ngx.arg[1], ngx.arg[2])
        end
    end
end

-- Put `model` where the body's model JSON string sits ("offset,length", as the
-- sidecar said); returns where it sits now, or nil if the body was left alone.
local function splice_model(at, model)
    local start, len = (at or ""):match("^(%d+),(%d+)$")
    start, len = tonumber(start), tonumber(len)
    local body = req.get_body_data()
    if not (start and body and model and model ~= "") then
        return nil
    end
    local encoded = cjson.encode(model)
    req.set_body_data(sub(body, 1, start - 1) .. encoded .. sub(body, start + len))
    return start .. "," .. #encoded
end

-- Before re-sending the body to fallback hop N, put that endpoint's model in it.
function M.splice_fallback(hop)
    local at = splice_model(var.route_model_at, hop == 1 and var.hop_fb1_model or var.hop_fb2_model)
    if at then
        var.route_model_at = at
    end
end

-- The shadow relay (a server of its own) gets the mirrored body as the primary
-- endpoint was sent it, and the model's place in headers: it sends the shadow
-- endpoint its own model id, or it would ask for the primary's model.
function M.splice_shadow()
    req.read_body()
    splice_model(var.http_x_hir_shadow_model_at, var.hop_shadow_model)
end

M._record_usage = record_usage  -- for loadtests/bench_usage_parse.lua

return M
