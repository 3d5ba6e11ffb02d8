"""A node simulator speaking the Talos machine API over mTLS, for tests, benchmarks and the demo."""
