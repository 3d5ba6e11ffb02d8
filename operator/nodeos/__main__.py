"""Lets ``python -m nodeos`` run the command-line interface."""

from nodeos.cli import main

raise SystemExit(main())
