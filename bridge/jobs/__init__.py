"""Jobs: what to separate (spec), the durable queue (store), status files and the worker."""
