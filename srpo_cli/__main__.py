"""``python -m srpo_cli`` = the ``srpo`` command."""

from srpo_cli.cli import main

raise SystemExit(main())
