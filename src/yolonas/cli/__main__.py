"""`python -m yolonas.cli`: the `yolonas` command."""

from yolonas.cli import main

main()
