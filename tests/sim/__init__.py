"""A deterministic simulation of the rollout engine: virtual time, a modelled cluster, faults."""
