"""StemBridge: stem separation for the places where music is made.

The import is light on purpose: host scripts call ``stembridge submit/status`` and
must get an answer fast, so nothing here imports torch. The separation engine
lives in :mod:`bridge.models` and is imported only when audio is separated.
"""

__version__ = "0.1.0"
