"""`python -m gathering` runs the command line."""

from gathering.api.serve import main

main()
