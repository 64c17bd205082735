"""JSON and TOML text written by someone else (a user, a host script, another machine).

The standard parsers fail in more ways than their decode errors: a number longer
than Python converts (``ValueError``), or arrays and tables nested a few thousand
deep (``RecursionError``). Here every one of those becomes a ``ValueError`` whose
message says what is wrong, so a caller catches one class and names its file.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

_TOO_DEEP = "arrays or tables nested too deeply"
_TOO_LONG = "a whole number with more than 4300 digits"


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` that raises only ``ValueError`` (with a reason a person can read)."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError:
        raise ValueError(_TOO_LONG) from None
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads`` that raises only ``ValueError`` (with a reason a person can read)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except ValueError:
        raise ValueError(_TOO_LONG) from None
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
