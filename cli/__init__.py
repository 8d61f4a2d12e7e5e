"""The `avwatch` command line: the top layer, the only one that reads flags and prints for people.

    schemas  <-  detectors  <-  avwatch (core)  <-  jobs  <-  cli

One module per command group, each with `register(subparsers)`; cli/main.py lists them. A command
parses its flags, calls the layers below and prints their results; the work itself lives below.
"""
