"""`python -m analysis`: the kit's command line."""

from analysis.cli import main

raise SystemExit(main())
