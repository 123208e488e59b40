"""The client side: talking to model servers.

- ``client``: the lean HTTP/1.1 client (pooled connections, httptools' parser).
- ``replica``: one upstream server of a deployment (base URL, request heads, keys).
- ``routing``: which deployment and upstream model answer a client's model id.
"""
