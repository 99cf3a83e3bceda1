"""Where deployments run: the Target protocol and its adapters (local processes, Docker, fakes)."""
