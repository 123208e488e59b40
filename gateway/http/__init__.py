"""The client-facing HTTP/1.1 servers. ``messages`` is what a handler sees (requests,
answers, header lines), whichever server runs it. The lean server is ``server`` (the
protocol factory, drain and shutdown), ``connection`` (one socket: parsing, bounds,
flow control) and ``request`` (its request, body and stream); ``aiohttp_server`` runs
the same handler on aiohttp's low-level server; ``refusals`` is the log both keep of
what they refuse."""
