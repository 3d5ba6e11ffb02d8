"""The imperative shell of a rollout: runs the core's decisions against the ports."""
