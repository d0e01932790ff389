"""mxgate: an inbound mail gateway that takes its routing from PostgreSQL."""

__version__ = "0.1.0"
