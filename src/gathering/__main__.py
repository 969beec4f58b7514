"""`python -m gathering` runs the CLI."""

from gathering.cli import main

main()
