"""``python -m bridge`` runs the ``stembridge`` command."""

from bridge.cli import main

raise SystemExit(main())
