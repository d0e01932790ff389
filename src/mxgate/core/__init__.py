"""The pure core: routing decisions over a snapshot. Stdlib only, no I/O."""
