"""``python -m batchain.cli``: the command line (the same as ``python -m batchain``)."""

from batchain.cli import main

main()
