"""The models: catalog, weights, loading, the streaming engine and a model loaded on its device.

Only :mod:`bridge.models.catalog` is free of
torch; import the rest only when audio is about to be separated.
"""
