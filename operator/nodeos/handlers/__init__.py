"""kopf handlers: they translate Kubernetes events into engine calls and nothing more.

Importing this package registers every handler with kopf's default registry.
"""

from nodeos.handlers import lifecycle, nodes, plans

__all__ = ["lifecycle", "nodes", "plans"]
