"""The committed REAPER API list (integrations/reaper/sdk/reaper_lua_api.tsv) and its extractor.

The expected Lua signatures come from REAPER's reascripthelp, independently of the header.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
TSV = ROOT / "integrations" / "reaper" / "sdk" / "reaper_lua_api.tsv"
TOOL = ROOT / "tools" / "extract_reaper_api.py"

# name -> (min_args, max_args), as reascripthelp gives the Lua calls.
KNOWN = {
    "GetMediaSourceFileName": (1, 1),
    "PCM_Source_GetSectionInfo": (1, 1),
    "GetUserInputs": (4, 4),
    "GetSetMediaTrackInfo_String": (4, 4),
    "ExecProcess": (2, 2),
    "Undo_EndBlock": (2, 2),
    "ShowMessageBox": (3, 3),
    "GetExtState": (2, 2),
    "SetExtState": (4, 4),
    "CountSelectedMediaItems": (1, 1),
    "GetSelectedMediaItem": (2, 2),
    "GetMediaItemInfo_Value": (2, 2),
    "SetMediaItemInfo_Value": (3, 3),
    "InsertTrackAtIndex": (2, 2),
    "AddRemoveReaScript": (4, 4),
    "PCM_Source_CreateFromFile": (1, 1),
    # Lua-only, added by hand
    "defer": (1, 1),
    "atexit": (1, 1),
    "runloop": (1, 1),
    "get_action_context": (0, 0),
}


def load_tsv() -> dict[str, tuple[int, int, str]]:
    rows: dict[str, tuple[int, int, str]] = {}
    header_seen = False
    for line in TSV.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        if not header_seen:
            assert fields == ["name", "min_args", "max_args", "lua_returns"]
            header_seen = True
            continue
        assert len(fields) == 4, line
        name, lo, hi, returns = fields
        assert name not in rows, f"duplicate {name}"
        rows[name] = (int(lo), int(hi), returns)
    return rows


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("extract_reaper_api", TOOL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def api() -> dict[str, tuple[int, int, str]]:
    return load_tsv()


def test_list_is_large(api: dict[str, tuple[int, int, str]]) -> None:
    assert len(api) > 500
    assert all(0 <= lo <= hi for lo, hi, _ in api.values())


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_lua_signatures(api: dict[str, tuple[int, int, str]], name: str) -> None:
    lo, hi, _ = api[name]
    assert (lo, hi) == KNOWN[name]


def test_returns_keep_out_parameters(api: dict[str, tuple[int, int, str]]) -> None:
    assert api["PCM_Source_GetSectionInfo"][2] == "bool,offsOut,lenOut,revOut"
    assert api["GetMediaSourceFileName"][2] == "void,filenamebufOut"
    assert api["GetUserInputs"][2] == "bool,retvals_csv"


def test_source_is_recorded() -> None:
    head = TSV.read_text(encoding="utf-8")[:2000]
    assert "justinfrankel/reaper-sdk" in head
    assert "reaper_plugin_functions.h" in head
    assert "Lua-only" in head


def test_extractor_rules_on_sample_declarations() -> None:
    tool = load_tool()
    header = "\n".join(
        [
            "REAPERAPI_DEF bool (*PCM_Source_GetSectionInfo)"
            "(PCM_source* src, double* offsOut, double* lenOut, bool* revOut);",
            "  ReaProject* (*REAPERAPI_FUNCNAME(EnumProjects))"
            "(int idx, char* projfnOutOptional, int projfnOutOptional_sz);",
            "  bool (*REAPERAPI_FUNCNAME(GetEnvelopeStateChunk))"
            "(TrackEnvelope* env, char* strNeedBig, int strNeedBig_sz, bool isundoOptional);",
            "  int (*REAPERAPI_FUNCNAME(GetSetProjectGrid))(ReaProject* project, bool set, "
            "double* divisionInOutOptional, int* swingmodeInOutOptional);",
            "  void (*REAPERAPI_FUNCNAME(Broken))(int, int);",
        ]
    )
    functions, skipped = tool.parse_header(header)
    sigs = {f.name: tool.lua_signature(f) for f in functions}

    def counts(name: str) -> tuple[int, int]:
        return sigs[name].min_args, sigs[name].max_args

    assert skipped == ["Broken"]
    assert counts("PCM_Source_GetSectionInfo") == (1, 1)
    assert counts("EnumProjects") == (1, 1)
    assert counts("GetEnvelopeStateChunk") == (2, 3)
    assert sigs["GetEnvelopeStateChunk"].returns == ["bool", "strNeedBig"]
    assert counts("GetSetProjectGrid") == (2, 4)
