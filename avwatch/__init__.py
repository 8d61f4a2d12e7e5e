"""avwatch: audio/video quality monitoring on Spark. See README.md for the data flow."""

__version__ = "0.1.0"
