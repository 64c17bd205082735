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
