"""`python -m xling ...` (and `torchrun -m xling ...`) runs the CLI."""

from xling.cli import main

raise SystemExit(main())
