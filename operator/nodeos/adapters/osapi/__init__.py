"""The OS API adapter: a grpc.aio client for the Talos machine API, with mTLS credentials."""
