"""The client-facing HTTP/1.1 server: ``server`` (connections, parsing, flow
control) and ``messages`` (what a handler sees: requests and answers)."""
