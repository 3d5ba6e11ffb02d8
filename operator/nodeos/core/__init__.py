"""The functional core: pure planning and node state decisions over plain data."""
