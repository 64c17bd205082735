"""HT Demucs separation: model catalog, weights, loading and the streaming engine.

Only :mod:`bridge.separation.catalog` and :mod:`bridge.separation.stems` are free of
torch; import the rest only when audio is about to be separated.
"""
