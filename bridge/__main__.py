"""``python -m bridge`` runs the ``stembridge`` command."""

from bridge.cli import process_main

# Guarded: child processes started with 'spawn' import this module again.
if __name__ == "__main__":
    raise SystemExit(process_main())
