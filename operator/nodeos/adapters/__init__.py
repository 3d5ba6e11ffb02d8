"""The only code that does I/O: implementations of the ports over real systems."""
