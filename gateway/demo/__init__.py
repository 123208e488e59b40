"""The bundled demo upstream: a fake chat-completions server (``demo.upstream``)."""
