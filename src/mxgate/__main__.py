"""``python -m mxgate`` runs the command line."""

from mxgate.cli import main

main()
