-- Lua glue for the router's lua mode (DESIGN.md): ask the sidecar, then forward.
-- Loaded once per worker via lua_package_path; keep per-request work minimal.
local cjson = require "cjson.safe"

local ngx = ngx
local var = ngx.var
local req = ngx.req
local capture = ngx.location.capture
local exec = ngx.exec
local sub, lower, tonumber = string.sub, string.lower, tonumber

local M = {}

-- Sidecar response headers a client must never see.
local INTERNAL = {
    ["x-route-decision"] = true, ["x-accel-redirect"] = true, ["server"] = true,
    ["date"] = true, ["content-length"] = true, ["connection"] = true,
    ["keep-alive"] = true, ["transfer-encoding"] = true, ["x-constitutional-hash"] = true,
}

local DECIDE = { method = ngx.HTTP_POST, always_forward_body = true }

local function drop_internal_request_headers()
    -- A client may not send headers named like the router's own decision headers.
    local headers = req.get_headers(0, true)  -- 0: every header, not the first 100
    for name in pairs(headers) do
        if lower(sub(name, 1, 8)) == "x-route-" then
            req.clear_header(name)
        end
    end
end

function M.route()
    drop_internal_request_headers()
    req.read_body()
    local res = capture("/_decide", DECIDE)
    local status, h = res.status, res.header

    if status == 200 and not res.truncated then
        local endpoint = h["X-Route-Endpoint"]
        local target = h["X-Accel-Redirect"]
        if endpoint and (target == "@buffered" or target == "@stream") then
            var.route_endpoint = endpoint
            var.route_auth = h["X-Route-Auth"] or ""
            var.route_path = h["X-Route-Path"] or ""
            var.route_fallback = h["X-Route-Fallback"] or ""
            var.route_fallback_auth = h["X-Route-Fallback-Auth"] or ""
            var.route_fallback2 = h["X-Route-Fallback2"] or ""
            var.route_fallback2_auth = h["X-Route-Fallback2-Auth"] or ""
            var.route_ratelimit = h["X-Route-RateLimit"] or ""
            var.route_ratelimit_policy = h["X-Route-RateLimit-Policy"] or ""
            local at = h["X-Route-Model-At"]
            if at and res.body ~= "" then
                var.route_model_at = at
                req.set_body_data(res.body)
            end
            return exec(target)
        end
    elseif status >= 400 and status < 500 and h["X-Route-Decision"] == "deny" then
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

-- Before re-sending the body to fallback hop N, put that endpoint's model in it.
-- The sidecar told us where the model's JSON string sits ("offset,length").
function M.splice_fallback(hop)
    local at = var.route_model_at
    if at == "" then
        return
    end
    local start, len = at:match("^(%d+),(%d+)$")
    start, len = tonumber(start), tonumber(len)
    local body = req.get_body_data()
    if not (start and body) then
        return
    end
    local model = hop == 1 and var.hop_fb1_model or var.hop_fb2_model
    local encoded = cjson.encode(model)
    req.set_body_data(sub(body, 1, start - 1) .. encoded .. sub(body, start + len))
    var.route_model_at = start .. "," .. #encoded
end

return M
