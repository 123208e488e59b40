"""The endpoints: ``/v1/responses``, ``/v1/chat/completions``, ``/v1/models``.

``endpoints.Gateway.handle`` is the one place where a ``GatewayError`` becomes an
HTTP error answer; ``body`` reads and decodes request bodies; ``pings`` sends SSE
comments on streams whose upstream is quiet.
"""
