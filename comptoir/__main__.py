"""`python -m comptoir`: the same as the `comptoir` command."""

from comptoir.cli import main

main()
