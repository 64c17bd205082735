"""The studio dashboard: a local web page on the daemon's queue, folders, workers and stems.

``auth`` (token, CSRF and host rules), ``app`` (routes and JSON API), ``server``
(uvicorn on a daemon thread), ``static/`` (the pages, plain HTML/JS/CSS).
"""
