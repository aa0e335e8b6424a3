"""``python -m batchain``: the command line."""

from batchain.cli import main

main()
