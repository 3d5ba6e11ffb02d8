"""A real Kubernetes control plane for tests and the demo, built from published Go modules."""
