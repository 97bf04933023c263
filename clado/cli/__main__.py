"""`python -m clado.cli`: the same as the `clado` command."""

from clado.cli import main

main()
