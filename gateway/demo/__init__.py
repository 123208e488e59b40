"""The bundled demo upstream: a fake chat-completions server (``demo.upstream``) and
what it answers (``demo.answers``; ``script``, ``reasoning`` and ``faults`` for its modes)."""
