"""nodeos: a Kubernetes operator that rolls OS upgrades across nodes running an API-driven OS."""

__version__ = "0.1.0"
