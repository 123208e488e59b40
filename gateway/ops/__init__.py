"""The process around the gateway: building it, serving it on a socket, signals,
worker processes (``lifecycle``)."""
