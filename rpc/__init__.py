"""worldstate over gRPC: the proto (worldstate.proto), its generated modules, the server each
node runs beside HTTP (server.py), and a client channel carrying an API key (channel.py)."""
