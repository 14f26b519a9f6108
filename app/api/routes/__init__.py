"""REST routes under /v1: transport only; the services do the work."""
