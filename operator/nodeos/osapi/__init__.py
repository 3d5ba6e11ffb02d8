"""Talos-compatible OS API protocol definitions (our own .proto files) and their generated stubs."""
