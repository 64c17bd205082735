"""Extract the REAPER API function list, with Lua argument counts, from the SDK header.

Reads ``reaper_plugin_functions.h`` (github.com/justinfrankel/reaper-sdk, ``sdk/``) and
writes a TSV with one line per API function::

    name <TAB> min_args <TAB> max_args <TAB> lua_returns

The Lua calling convention is derived from the C parameter names, following the rules that
ReaScript documents (reascripthelp):

* a parameter whose name ends in ``Out`` (also ``OutOptional``) is an output only and is not
  passed from Lua;
* a ``*_sz`` size parameter directly after its buffer (``bufOut_sz`` after ``bufOut``) is not
  passed from Lua;
* a parameter whose name ends in ``InOut`` (or ``InOutOptional``) is passed and also returned;
* a passed parameter whose name ends in ``Optional`` may be omitted: it counts in ``max_args``
  but only lowers ``min_args`` when it is trailing (``min_args`` is the 1-based position of the
  last non-optional passed parameter);
* buffer-size hints (``NeedBig``, ``Need64``, ``WantNeedBig`` ...) are ignored when reading a
  suffix (``bufOutNeedBig`` is an output, ``stringNeedBig`` an ordinary parameter);
* everything else is passed; a passed non-const ``char*`` buffer (``retvals_csv``,
  ``stringNeedBig``) is also returned, as ReaScript does.

``lua_returns`` is the C return type followed by the names of the returned parameters, in
order, comma separated (``bool,offsOut,lenOut,revOut``).  The header also declares some
C-only functions (callbacks, raw pointers, LICE); they are listed like the others.

A few functions exist only in ReaScript/Lua and are not in the header (``defer``, ``atexit``,
``get_action_context`` ...); they are appended by hand, in a marked block, from
:data:`LUA_ONLY`.

Usage::

    python tools/extract_reaper_api.py path/to/reaper_plugin_functions.h \\
        -o integrations/reaper/sdk/reaper_lua_api.tsv \\
        --commit <sha> --path sdk/reaper_plugin_functions.h

Plain Python 3.11, no dependencies.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_REPO = "justinfrankel/reaper-sdk"
DEFAULT_PATH = "sdk/reaper_plugin_functions.h"

# Lua-only functions (not in the C header), added by hand from reascripthelp:
# (name, min_args, max_args, lua_returns).
LUA_ONLY: tuple[tuple[str, int, int, str], ...] = (
    ("atexit", 1, 1, "void"),
    ("defer", 1, 1, "void"),
    (
        "get_action_context",
        0,
        0,
        "bool,filename,sectionID,cmdID,mode,resolution,val,contextstr",
    ),
    ("gmem_attach", 1, 1, "const char*"),
    ("gmem_read", 1, 1, "double"),
    ("gmem_write", 2, 2, "void"),
    ("runloop", 1, 1, "void"),
)

# A declaration: "<ret> (*REAPERAPI_FUNCNAME(Name))(<params>);" (current SDK) or
# "REAPERAPI_DEF <ret> (*Name)(<params>);" (older SDKs).
_DECL_RE = re.compile(
    r"^[ \t]*(?:REAPERAPI_DEF[ \t]+)?"
    r"(?P<ret>[A-Za-z_][\w \t*]*?)[ \t]*"
    r"\(\*[ \t]*(?:REAPERAPI_FUNCNAME\([ \t]*(?P<name1>\w+)[ \t]*\)|(?P<name2>\w+))[ \t]*\)"
    r"[ \t]*\((?P<params>[^;]*?)\)[ \t]*;",
    re.MULTILINE,
)
# Anything that looks like a declaration, to report the ones _DECL_RE could not read.
_LOOSE_RE = re.compile(
    r"\(\*[ \t]*REAPERAPI_FUNCNAME\([ \t]*(\w+)[ \t]*\)[ \t]*\)"
    r"|^[ \t]*REAPERAPI_DEF[ \t]+[^;/\n]*?\(\*[ \t]*(\w+)[ \t]*\)[ \t]*\(",
    re.MULTILINE,
)
_FNPTR_PARAM_RE = re.compile(
    r"^(?P<type>.+?)\([ \t]*\*[ \t]*(?P<name>\w+)[ \t]*\)[ \t]*\(.*\)$", re.S
)
_PARAM_RE = re.compile(r"^(?P<type>.*?[\s*&])(?P<name>[A-Za-z_]\w*)$", re.S)
_SIZE_HINT_RE = re.compile(r"(?:Want)?(?:NeedBig|Need\d+)$")


class ParseError(ValueError):
    """A declaration whose parameter list could not be read."""


@dataclass
class Param:
    ctype: str
    name: str


@dataclass
class Function:
    name: str
    ret: str
    params: list[Param] = field(default_factory=list)


@dataclass
class LuaSignature:
    name: str
    min_args: int
    max_args: int
    returns: list[str]


def _norm_type(text: str) -> str:
    text = " ".join(text.split())
    return re.sub(r"\s*\*", "*", text).strip()


def _split_params(text: str) -> list[str]:
    """Split a C parameter list on top-level commas."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def parse_params(text: str) -> list[Param]:
    """Parse a C parameter list into typed, named parameters."""
    text = " ".join(text.split())
    if text in ("", "void"):
        return []
    params: list[Param] = []
    for raw in _split_params(text):
        m = _FNPTR_PARAM_RE.match(raw) or _PARAM_RE.match(raw)
        if not m or not m.group("type").strip():
            raise ParseError(f"cannot read parameter {raw!r}")
        params.append(Param(_norm_type(m.group("type")), m.group("name")))
    return params


def parse_header(text: str) -> tuple[list[Function], list[str]]:
    """Return the declared functions and the names of declarations that could not be parsed."""
    functions: dict[str, Function] = {}
    skipped: list[str] = []
    for m in _DECL_RE.finditer(text):
        name = m.group("name1") or m.group("name2")
        try:
            params = parse_params(m.group("params"))
        except ParseError:
            skipped.append(name)
            continue
        functions.setdefault(name, Function(name, _norm_type(m.group("ret")), params))
    for m in _LOOSE_RE.finditer(text):
        name = m.group(1) or m.group(2)
        if name not in functions and name not in skipped:
            skipped.append(name)
    return list(functions.values()), skipped


def lua_signature(func: Function) -> LuaSignature:
    """Apply the ReaScript naming rules to one C declaration."""
    passed: list[bool] = []  # optional flag of every parameter passed from Lua
    returns = [func.ret]
    names = [p.name for p in func.params]
    for i, param in enumerate(func.params):
        if param.name.endswith("_sz") and i > 0 and names[i - 1] == param.name[:-3]:
            continue  # buffer size, supplied by ReaScript
        core = _SIZE_HINT_RE.sub("", param.name)
        optional = core.endswith("Optional")
        if optional:
            core = core[: -len("Optional")]
        if core.endswith("InOut"):
            passed.append(optional)
            returns.append(param.name)
        elif core.endswith("Out"):
            returns.append(param.name)  # output only
        else:
            passed.append(optional)
            if param.ctype == "char*":  # writable string buffer: passed in and returned
                returns.append(param.name)
    required = [i for i, opt in enumerate(passed) if not opt]
    min_args = required[-1] + 1 if required else 0
    return LuaSignature(func.name, min_args, len(passed), returns)


def render_tsv(
    signatures: list[LuaSignature],
    skipped: list[str],
    *,
    repo: str,
    path: str,
    commit: str,
    extracted: str,
    note: str = "",
) -> str:
    """Render the TSV, comments included."""
    lines = [
        "# REAPER API functions with their Lua (ReaScript) argument counts.",
        f"# Source: github.com/{repo}, file {path}, commit {commit or 'unknown'}.",
        f"# Extracted {extracted} by tools/extract_reaper_api.py.",
    ]
    if note:
        lines += [f"# {chunk}" for chunk in note.splitlines()]
    lines += [
        "# Lua rules, from the C parameter names (as reascripthelp documents them):",
        "#  - name ends in Out (or OutOptional): output only, not passed from Lua;",
        "#  - a *_sz size parameter right after its buffer is not passed from Lua;",
        "#  - name ends in InOut or InOutOptional: passed from Lua and also returned;",
        "#  - name ends in Optional (InOptional, InOutOptional): may be omitted; counts in",
        "#    max_args, and min_args is the position of the last non-optional passed parameter;",
        "#  - size hints (NeedBig, Need64, WantNeedBig...) are ignored when reading a suffix;",
        "#  - everything else is passed; a passed non-const char* buffer is also returned.",
        "# lua_returns: the C return type, then the names of the returned parameters, in order.",
        "# The header also declares C-only functions (raw pointers, callbacks, LICE): they are",
        "# listed too, though ReaScript does not expose all of them.",
        "# The block marked Lua-only at the end was added by hand from reascripthelp",
        "# (functions that exist only in ReaScript, not in the C header).",
        "name\tmin_args\tmax_args\tlua_returns",
    ]
    for sig in sorted(signatures, key=lambda s: (s.name.lower(), s.name)):
        lines.append(f"{sig.name}\t{sig.min_args}\t{sig.max_args}\t{','.join(sig.returns)}")
    lines.append(
        "# --- Lua-only functions (not in the C header), added by hand from reascripthelp ---"
    )
    for name, lo, hi, rets in sorted(LUA_ONLY, key=lambda row: row[0].lower()):
        lines.append(f"{name}\t{lo}\t{hi}\t{rets}")
    lines.append("# skipped: " + (", ".join(skipped) if skipped else "none"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("header", type=Path, help="path to reaper_plugin_functions.h")
    parser.add_argument("-o", "--output", type=Path, help="TSV to write (default: stdout)")
    parser.add_argument("--repo", default=DEFAULT_REPO, help="source repository, for the comment")
    parser.add_argument("--path", default=DEFAULT_PATH, help="path in the repository")
    parser.add_argument("--commit", default="", help="commit id of the header")
    parser.add_argument("--date", default=_dt.date.today().isoformat(), help="extraction date")
    parser.add_argument("--note", default="", help="extra comment line(s) for the header")
    args = parser.parse_args(argv)

    functions, skipped = parse_header(args.header.read_text(encoding="utf-8", errors="replace"))
    if not functions:
        print(f"no API declarations found in {args.header}", file=sys.stderr)
        return 1
    tsv = render_tsv(
        [lua_signature(f) for f in functions],
        skipped,
        repo=args.repo,
        path=args.path,
        commit=args.commit,
        extracted=args.date,
        note=args.note,
    )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(tsv, encoding="utf-8")
        print(f"{len(functions)} functions, {len(skipped)} skipped -> {args.output}")
    else:
        sys.stdout.write(tsv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
