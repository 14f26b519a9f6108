"""`python -m app.cli`: the same as the `tepat` script."""

from app.cli import main

main()
