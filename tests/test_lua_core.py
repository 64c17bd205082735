"""The Lua module the REAPER and the Ardour scripts share, in each host's Lua: REAPER's 5.4
(Debian's ``lua5.4``) and Ardour's 5.3 (``ardour7-lua``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bridge.hosts.script_install import SHARED_MODULE

from programs import required_program

CORE = Path(__file__).resolve().parent.parent / "integrations" / "common" / SHARED_MODULE

# Every line separator Python's str.splitlines knows besides LF (CR, VT, FF, FS, GS, RS,
# NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR), as the bytes a UTF-8 status file holds.
U2028, U2029, U0085 = "\u2028".encode(), "\u2029".encode(), "\u0085".encode()
NOT_LINE_ENDS = b"\r\x0b\x0c\x1c\x1d\x1e" + U0085 + U2028 + U2029


@pytest.fixture(params=[("lua5.4", "lua5.4"), ("ardour7-lua", "ardour")], ids=["reaper", "ardour"])
def lua(request: pytest.FixtureRequest) -> str:
    program, package = request.param
    return required_program(program, package=package, purpose="the shared Lua module is not run")


def run_core(lua: str, body: str, tmp_path: Path) -> list[bytes]:
    """Run ``body`` with the module as ``core``; return what it wrote with ``out``, a line
    each, every value in hex (so that no byte is lost on the way)."""
    driver = tmp_path / "driver.lua"
    driver.write_text(
        f"local core = dofile([==[{CORE}]==])\n"
        "local function hex(s)\n"
        "  return (s:gsub('.', function(c) return ('%02x'):format(c:byte()) end))\n"
        "end\n"
        "local function out(...)\n"
        "  local parts = {}\n"
        "  for i, v in ipairs({...}) do parts[i] = hex(tostring(v)) end\n"
        "  io.write('@', table.concat(parts, ' '), '\\n')\n"
        "end\n"
        f"{body}\n",
        encoding="utf-8",
    )
    result = subprocess.run([lua, str(driver)], capture_output=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.split(b"\n") if line.startswith(b"@")]
    return [
        b" ".join(bytes.fromhex(part.decode()) for part in line[1:].split(b" ")) for line in lines
    ]


def read_status(lua: str, raw: bytes, tmp_path: Path) -> tuple[dict[bytes, bytes], list[bytes]]:
    """What the module reads from a status file holding ``raw``: the values by key, and
    the stems as ``name=path`` in file order."""
    (tmp_path / "job.status").write_bytes(raw)
    body = """
local status = core.read_status("job.status")
local keys = {}
for key in pairs(status) do if key ~= "stems" then keys[#keys + 1] = key end end
table.sort(keys)
for _, key in ipairs(keys) do out("value", key, status[key]) end
for _, stem in ipairs(status.stems) do out("stem", stem.name .. "=" .. stem.path) end
"""
    values: dict[bytes, bytes] = {}
    stems: list[bytes] = []
    for line in run_core(lua, body, tmp_path):
        kind, _, rest = line.partition(b" ")
        if kind == b"value":
            key, _, value = rest.partition(b" ")
            values[key] = value
        else:
            stems.append(rest)
    return values, stems


def test_status_values_come_back_byte_exact(lua: str, tmp_path: Path) -> None:
    # Given a status file whose values hold every line separator but LF, a NUL, Ctrl-Z, a
    # byte that is not UTF-8, tabs and "=", with LF and CRLF line ends and no final LF
    odd = b"a" + NOT_LINE_ENDS + b"\x00\x1a\xff\t=b"
    raw = (
        b"stembridge_status=1\n"
        b"state=done\r\n"
        b"folder=/stems/" + U2028 + b"take\n"
        b"error=" + odd + b"\r\r\n"
        b"stem.vocals=/stems/" + U2029 + b"vocals.wav\n"
        b"stem.drums=/stems/" + U0085 + b"drums.wav\r\n"
        b"stem.bass=/stems/" + U2028 + U0085 + U2029 + b".wav"
    )

    # When the module reads it
    values, stems = read_status(lua, raw, tmp_path)

    # Then lines end at LF only, one CR before it is dropped, and every other byte is kept
    assert values == {
        b"stembridge_status": b"1",
        b"state": b"done",
        b"folder": b"/stems/" + U2028 + b"take",
        b"error": odd + b"\r",
    }
    assert stems == [
        b"vocals=/stems/" + U2029 + b"vocals.wav",
        b"drums=/stems/" + U0085 + b"drums.wav",
        b"bass=/stems/" + U2028 + U0085 + U2029 + b".wav",
    ]


def test_a_separator_in_a_value_starts_no_line(lua: str, tmp_path: Path) -> None:
    # Given stems whose names hold a separator followed by what looks like a status line
    separators = [NOT_LINE_ENDS[i : i + 1] for i in range(6)] + [U0085, U2028, U2029]
    raw = b"state=running\n" + b"".join(
        b"stem.s%d=/s/x%sstate=done\n" % (i, separator) for i, separator in enumerate(separators)
    )

    values, stems = read_status(lua, raw, tmp_path)

    # Then the job is still running and each stem's path is its whole name
    assert values[b"state"] == b"running"
    assert stems == [
        b"s%d=/s/x%sstate=done" % (i, separator) for i, separator in enumerate(separators)
    ]


def test_an_absent_status_file_reads_as_nil(lua: str, tmp_path: Path) -> None:
    assert run_core(lua, 'out(tostring(core.read_status("none.status")))', tmp_path) == [b"nil"]


def test_submit_answers_become_jobs_or_messages(lua: str, tmp_path: Path) -> None:
    body = """
local answer = '{\\n  "id": "3f9a1c2b7d10",\\n  "daemon_running": true\\n}'
local job = core.submitted(0, answer, "Vox", "/s/Vox")
out(job.id, job.status_path, tostring(job.daemon), job.state, job.progress)
out(select(2, core.submitted(2, "Usage: ...\\r\\nerror: no such file\\r\\n", "Vox", "/s")))
out(select(2, core.submitted(nil, nil, "Vox", "/s")))
out(select(2, core.submitted(0, "{}", "Vox", "/s")))
"""
    job, failed, not_started, unexpected = run_core(lua, body, tmp_path)
    # the status file is where the daemon writes it, in the job's output folder
    assert job == b"3f9a1c2b7d10 /s/Vox/.stembridge/3f9a1c2b7d10.status true queued 0"
    # a failed submit says its last line, after the item's name
    assert failed == b"Vox: error: no such file"
    assert not_started == b"Vox: stembridge submit failed"
    assert unexpected == b"Vox: unexpected answer from stembridge submit: {}"


def test_the_module_uses_no_host_api() -> None:
    # It runs in REAPER's Lua and in Ardour's alike, so it names neither host's API
    text = CORE.read_text(encoding="utf-8")
    for name in ("reaper.", "gfx.", "ARDOUR", "Session", "Editor", "LuaDialog"):
        assert name not in text, name


# --- JSON and the installed models -----------------------------------------------------

#: Lua: ``encode(value)`` writes a decoded value back as JSON (keys sorted), so that Python
#: can compare it with what it encoded; strings go out byte for byte.
ENCODE = r"""
local function encode(value)
  if value == core.NULL then return "null" end
  local kind = type(value)
  if kind == "table" then
    local keys = {}
    for key in pairs(value) do keys[#keys + 1] = key end
    if #keys == #value then
      local parts = {}
      for i, item in ipairs(value) do parts[i] = encode(item) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    table.sort(keys)
    local parts = {}
    for i, key in ipairs(keys) do parts[i] = encode(key) .. ":" .. encode(value[key]) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif kind == "string" then
    return '"' .. value:gsub('[%c"\\]', function(c) return ("\\u%04x"):format(c:byte()) end) .. '"'
  elseif kind == "number" then
    return math.type(value) == "integer" and tostring(value) or ("%.17g"):format(value)
  end
  return tostring(value)
end
"""

DOCUMENT = {
    "text": 'é ✓ 𝄞 "quoted" back\\slash /slash \b\f\n\r\t \x01 \x1f \x7f end',
    "numbers": [0, -1, 7, 2.5, -0.001, 1e-3, 6.02e23, 12345678901, 1.5e300],
    "flags": [True, False, None],
    "nested": {"list": [[], [1, [2, {"deep": "yes"}]]], "empty text": ""},
    "": "an empty key",
}


@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "raw-utf8"])
def test_json_comes_back_as_python_wrote_it(lua: str, tmp_path: Path, ascii_only: bool) -> None:
    # Given a document with every kind of value, escapes, and characters beyond U+FFFF
    text = json.dumps(DOCUMENT, ensure_ascii=ascii_only, indent=2)
    (tmp_path / "doc.json").write_text(text, encoding="utf-8")
    body = ENCODE + (
        'local file = assert(io.open("doc.json", "rb"))\n'
        "local value, problem = core.decode_json(file:read('a'))\n"
        "out(value and encode(value) or problem)\n"
    )
    # When the module decodes it, Then it is the same document
    (line,) = run_core(lua, body, tmp_path)
    assert json.loads(line.decode("utf-8")) == DOCUMENT


def test_a_file_name_byte_python_escaped_comes_back_as_that_byte(lua: str, tmp_path: Path) -> None:
    # Given the name of a file that is not UTF-8, as Python holds it (surrogateescape)
    name = b"take \xff\xe9.ckpt".decode("utf-8", "surrogateescape")
    body = f"out(core.decode_json({json.dumps(json.dumps([name]))!s})[1])"
    # Then the bytes that name the file are back
    assert run_core(lua, body, tmp_path) == [b"take \xff\xe9.ckpt"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[1,]",
        '{"a" 1}',
        '{"a": 1,}',
        "{1: 2}",
        '"\\x"',
        '"\\u12"',
        '"\\ud800"',
        '"\\udc00"',
        '"\\ud800\\u0041"',
        '"tab\there"',
        '"no end',
        "01",
        "-",
        "1.",
        "1e",
        "[1] 2",
        "nul",
        "True",
    ],
)
def test_what_is_not_json_is_refused_with_where(lua: str, tmp_path: Path, text: str) -> None:
    body = (
        f"local value, problem = core.decode_json({json.dumps(text)})\n"
        "out(tostring(value), problem)"
    )
    (line,) = run_core(lua, body, tmp_path)
    value, _, problem = line.partition(b" ")
    assert value == b"nil" and b" at byte " in problem, problem


def test_model_fields_split_into_names(lua: str, tmp_path: Path) -> None:
    body = """
for _, field in ipairs({ "htdemucs", " a + b ", "a+b+c", "+a++b+", "", "  " }) do
  out(table.concat(core.model_names(field), "|"))
end
out(#core.model_names(nil))
"""
    assert run_core(lua, body, tmp_path) == [b"htdemucs", b"a|b", b"a|b|c", b"a|b", b"", b"", b"0"]


def test_the_installed_models_answer_becomes_a_list_or_a_message(lua: str, tmp_path: Path) -> None:
    rows = [
        {"name": "htdemucs", "family": "demucs", "stems": ["drums", "vocals"], "members": []},
        {"name": "vocals-best", "family": "ensemble", "stems": ["vocals"], "members": ["a", "b"]},
        {"name": "mine.ckpt", "family": "bs_roformer", "stems": None, "size_bytes": None},
        {"family": "no name: left out"},
    ]
    body = f"""
local models = core.installed_models(0, {json.dumps(json.dumps(rows, indent=2))})
for _, model in ipairs(models) do
  out(model.name, model.family, table.concat(model.stems, ","), table.concat(model.members, ","))
end
local warned = "/x/y.py:1: DeprecationWarning: [old]\\n  import z\\n"
  .. {json.dumps(json.dumps(rows[:1]))}
out(core.installed_models(0, warned)[1].name)
out(select(2, core.installed_models(2, "Usage: ...\\nstembridge: error: bad flag --installed\\n")))
out(select(2, core.installed_models(0, "Traceback")))
out(select(2, core.installed_models(nil, nil)))
"""
    lines = run_core(lua, body, tmp_path)
    assert lines[:3] == [
        b"htdemucs demucs drums,vocals ",
        b"vocals-best ensemble vocals a,b",
        b"mine.ckpt bs_roformer  ",
    ]
    # a warning Python printed to stderr before the list is not taken for it
    assert lines[3] == b"htdemucs"
    failed, garbled, not_started = lines[4:]
    assert failed.startswith(b"stembridge models list failed: stembridge: error: bad flag")
    assert b"stembridge models list --installed" in failed
    assert garbled.startswith(b"unexpected answer from stembridge models list: not a JSON value")
    assert not_started.startswith(b"stembridge models list failed: no output")
