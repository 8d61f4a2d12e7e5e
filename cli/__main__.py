"""`python -m cli ...`: the same as the `avwatch` console script."""
from cli.main import run

run()
