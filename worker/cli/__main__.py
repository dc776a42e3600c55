"""``python -m worker.cli``: the same as the ``factmatch`` script."""

from worker.cli import main

main()
