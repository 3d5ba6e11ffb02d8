"""The small Protocols the core depends on, and the plain data that crosses them."""
