"""evo grpc_bridge package."""
