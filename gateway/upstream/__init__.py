"""The client side: talking to model servers.

- ``pool``: the lean HTTP/1.1 client's pooled connections to one upstream origin.
- ``connection``: one of those connections and the response read from it (httptools' parser).
- ``response``: what the endpoints read of an upstream's answer (``UpstreamResponse``).
- ``timers``: deadlines, the pool's clock and timers, what each timeout says.
- ``replica``: one upstream server of a deployment (base URL, request heads, keys).
- ``routing``: which deployment and upstream model answer a client's model id.
"""
