"""kopf handlers: they translate Kubernetes events into engine calls and nothing more.

Importing this package registers every handler with kopf's default registry.
"""

from nodeos.handlers import configs, lifecycle, nodes, plans

__all__ = ["configs", "lifecycle", "nodes", "plans"]
