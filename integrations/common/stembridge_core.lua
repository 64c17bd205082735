-- @noindex
-- StemBridge's Lua core, shared by the REAPER and the Ardour scripts: the command lines
-- they run (quoted for /bin/sh or for the Windows C runtime), the config that
-- `stembridge <host> install` writes beside them, the answer of `stembridge submit`, and
-- the job status files the daemon writes.
--
-- Plain Lua, no host API, for Lua 5.3 (Ardour) and 5.4 (REAPER). `stembridge reaper
-- install`, `stembridge ardour install` and ReaPack put this file beside each host's
-- library, which loads it from its own folder.

local M = {}

M.CONFIG_NAME = "stembridge_config.lua"

local SEP = package.config:sub(1, 1)

--- `a` and `b` joined by the system's separator, unless `a` already ends in one.
function M.join(a, b)
  if a:sub(-1) == "/" or a:sub(-1) == "\\" then return a .. b end
  return a .. SEP .. b
end

-- Config --------------------------------------------------------------------------------

--- The command recorded by `installer` (`stembridge_config.lua` in the first of `folders`
-- that holds a usable one), or nil and a message saying how to fix it.
function M.load_config(folders, installer)
  for _, folder in ipairs(folders) do
    -- An empty environment: the file is data, it gets no functions to call.
    local chunk = loadfile(M.join(folder, M.CONFIG_NAME), "t", {})
    local ok, config = pcall(chunk or error, "missing")
    if ok and type(config) == "table" and type(config.command) == "table" and #config.command > 0 then
      return config
    end
  end
  return nil, "StemBridge is not set up: no usable " .. M.CONFIG_NAME .. " in " ..
    table.concat(folders, " or ") .. ".\n\nRun `" .. installer .. "` in a terminal, then try again."
end

-- Command lines ---------------------------------------------------------------------------

--- One argument for /bin/sh: single quotes, with embedded ones closed and escaped.
function M.quote_posix(arg)
  return "'" .. arg:gsub("'", "'\\''") .. "'"
end

--- One argument as the Microsoft C runtime (CommandLineToArgvW) reads it back: quoted
-- when it holds blanks or is empty; backslashes before a quote are doubled.
function M.quote_windows(arg)
  local quoted = arg == "" or arg:find("[ \t]") ~= nil
  local out, slashes = {}, 0
  for ch in arg:gmatch(".") do
    if ch == "\\" then
      slashes = slashes + 1
    elseif ch == '"' then
      out[#out + 1] = string.rep("\\", slashes * 2) .. '\\"'
      slashes = 0
    else
      out[#out + 1] = string.rep("\\", slashes) .. ch
      slashes = 0
    end
  end
  local tail = string.rep("\\", quoted and slashes * 2 or slashes)
  if quoted then return '"' .. table.concat(out) .. tail .. '"' end
  return table.concat(out) .. tail
end

--- `args` as one command line, each argument quoted for Windows or for /bin/sh.
function M.command_line(args, windows)
  local quote = windows and M.quote_windows or M.quote_posix
  local parts = {}
  for i, arg in ipairs(args) do parts[i] = quote(tostring(arg)) end
  return table.concat(parts, " ")
end

--- The arguments that run stembridge with `args`: the recorded command, then `args`.
function M.arguments(config, args)
  local full = {}
  for _, arg in ipairs(config.command) do full[#full + 1] = arg end
  for _, arg in ipairs(args) do full[#full + 1] = arg end
  return full
end

-- JSON ------------------------------------------------------------------------------------

--- JSON's null, where it stands in a decoded array or object.
M.NULL = setmetatable({}, { __tostring = function() return "null" end })

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r",
  t = "\t" }

--- The value `text` holds (RFC 8259): objects and arrays as tables, null as M.NULL, strings
-- as UTF-8. Nil and a message naming the offset when it is not JSON.
function M.decode_json(text)
  local pos = 1
  local function fail(what) error({ string.format("%s at byte %d", what, pos) }, 0) end
  local function skip() pos = text:find("[^ \t\r\n]", pos) or #text + 1 end
  local value
  local function hex4()
    local digits = text:match("^%x%x%x%x", pos)
    if not digits then fail("a \\u escape needs four hex digits") end
    pos = pos + 4
    return tonumber(digits, 16)
  end
  local function str()
    pos = pos + 1
    local parts = {}
    while true do
      local stop = text:find('["\\\0-\31]', pos)
      if not stop then fail("a string does not end") end
      parts[#parts + 1] = text:sub(pos, stop - 1)
      local ch = text:sub(stop, stop)
      pos = stop + 1
      if ch == '"' then return table.concat(parts) end
      if ch ~= "\\" then fail("a control character in a string") end
      local kind = text:sub(pos, pos)
      pos = pos + 1
      if kind == "u" then
        local code = hex4()
        -- A UTF-16 surrogate pair stands for one character beyond U+FFFF.
        if code >= 0xD800 and code <= 0xDBFF and text:sub(pos, pos + 1) == "\\u" then
          pos = pos + 2
          local low = hex4()
          if low < 0xDC00 or low > 0xDFFF then fail("a lone surrogate") end
          parts[#parts + 1] = utf8.char(0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00))
        elseif code >= 0xDC80 and code <= 0xDCFF then
          -- How Python writes a byte of a file name that is not UTF-8 (surrogateescape):
          -- the byte itself is what names the file again.
          parts[#parts + 1] = string.char(code - 0xDC00)
        elseif code >= 0xD800 and code <= 0xDFFF then
          fail("a lone surrogate")
        else
          parts[#parts + 1] = utf8.char(code)
        end
      else
        parts[#parts + 1] = ESCAPES[kind] or fail("an unknown escape \\" .. kind)
      end
    end
  end
  local function list(close, item)
    pos = pos + 1
    skip()
    if text:sub(pos, pos) == close then
      pos = pos + 1
      return
    end
    while true do
      item()
      skip()
      local ch = text:sub(pos, pos)
      pos = pos + 1
      if ch == close then return end
      if ch ~= "," then fail("expected ',' or '" .. close .. "'") end
      skip()
    end
  end
  function value()
    skip()
    local ch = text:sub(pos, pos)
    if ch == "{" then
      local object = {}
      list("}", function()
        if text:sub(pos, pos) ~= '"' then fail("an object key must be a string") end
        local key = str()
        skip()
        if text:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        object[key] = value()
      end)
      return object
    elseif ch == "[" then
      local array = {}
      list("]", function() array[#array + 1] = value() end)
      return array
    elseif ch == '"' then
      return str()
    end
    local whole = text:match("^-?%d+", pos)
    if whole and not whole:match("^-?0%d") then
      local number = whole .. (text:match("^%.%d+", pos + #whole) or "")
      number = number .. (text:match("^[eE][-+]?%d+", pos + #number) or "")
      pos = pos + #number
      return tonumber(number)
    end
    for word, result in pairs({ ["true"] = true, ["false"] = false, null = M.NULL }) do
      if text:sub(pos, pos + #word - 1) == word then
        pos = pos + #word
        return result
      end
    end
    fail("not a JSON value")
  end
  local ok, result = pcall(function()
    local decoded = value()
    skip()
    if pos <= #text then fail("more after the value") end
    return decoded
  end)
  if ok then return result end
  if type(result) == "table" then return nil, result[1] end
  error(result, 0)
end

-- Models ----------------------------------------------------------------------------------

--- The model names in a dialog's model field: one, or several joined with "+" (an
-- ensemble), blanks around each ignored; {} for an empty field.
function M.model_names(field)
  local names = {}
  for part in (field or ""):gmatch("[^+]+") do
    local name = part:match("^%s*(.-)%s*$")
    if name ~= "" then names[#names + 1] = name end
  end
  return names
end

--- The models `stembridge models list --json --installed` answered with exit code `code`
-- and output `out` (stderr with stdout, as both hosts run it): a list of {name, family,
-- stems = {...}, members = {...}}. Nil and a message when it did not answer with one.
function M.installed_models(code, out)
  if code ~= 0 then
    local last = ""
    for line in (out or ""):gmatch("[^\r\n]+") do last = line end
    return nil, "stembridge models list failed: " .. (last ~= "" and last or "no output") ..
      "\n(`stembridge models list --installed` in a terminal says more)"
  end
  -- The list is the first line that opens an array: a warning Python wrote to stderr
  -- before it is not part of it.
  local start = ("\n" .. out):find("\n%[") or 1
  local rows, problem = M.decode_json(out:sub(start))
  if type(rows) ~= "table" then
    return nil, "unexpected answer from stembridge models list: " .. (problem or out)
  end
  local models = {}
  for _, row in ipairs(rows) do
    if type(row) == "table" and type(row.name) == "string" then
      local function strings(list)
        local kept = {}
        for _, item in ipairs(type(list) == "table" and list or {}) do
          if type(item) == "string" then kept[#kept + 1] = item end
        end
        return kept
      end
      models[#models + 1] = { name = row.name,
        family = type(row.family) == "string" and row.family or "",
        stems = strings(row.stems), members = strings(row.members) }
    end
  end
  return models
end

-- Jobs ------------------------------------------------------------------------------------

--- The job that `stembridge submit ... -o <folder> --json` answered with exit code `code`
-- and output `out`, still queued; its status file is in <folder>/.stembridge. Nil and a
-- message starting with `name` when it was not submitted.
function M.submitted(code, out, name, folder)
  if code ~= 0 then
    local last = ""
    for line in (out or ""):gmatch("[^\r\n]+") do last = line end
    return nil, name .. ": " .. (last ~= "" and last or "stembridge submit failed")
  end
  local id = out:match('"id"%s*:%s*"(%x+)"')
  if not id then return nil, name .. ": unexpected answer from stembridge submit: " .. out end
  return {
    id = id,
    status_path = M.join(M.join(folder, ".stembridge"), id .. ".status"),
    daemon = out:match('"daemon_running"%s*:%s*true') ~= nil,
    state = "queued", progress = 0, stage = "queued",
  }
end

--- The status file as a table of its `key=value` lines, with the stems (`stem.<name>=`)
-- in file order; nil while it is absent. Lines end at LF only, one CR before it is
-- dropped (a file saved with CRLF still says "done"), and every other byte of a value is
-- kept as it is: a path may hold any byte but LF, U+2028 and U+0085 included. Binary
-- mode, so that Windows turns no CRLF and no Ctrl-Z into anything.
function M.read_status(path)
  local file = io.open(path, "rb")
  if not file then return nil end
  local status = { stems = {} }
  for line in file:lines() do
    local key, value = line:gsub("\r$", ""):match("^([%w_%.%-]+)=(.*)$")
    if key then
      local stem = key:match("^stem%.(.+)$")
      if stem then
        status.stems[#status.stems + 1] = { name = stem, path = value }
      else
        status[key] = value
      end
    end
  end
  file:close()
  return status
end

--- Take what a status file says into `job`; a progress that is not a number from 0 to 1
-- (a damaged file: "nan", "1e999") keeps the last one, so a progress bar can be drawn.
function M.apply_status(job, status)
  job.status = status
  job.state, job.stage = status.state or job.state, status.stage or job.stage
  local progress = tonumber(status.progress)
  if progress and progress >= 0 and progress <= 1 then job.progress = progress end
end

return M
