"""Pure translation between the Responses API and chat completions.

- ``request``: a decoded ``ResponsesRequest`` → the chat request body.
- ``inputs``: Responses ``input`` items (and ``instructions``) → chat messages.
- ``response``: a chat completion → Responses output items and the response.
"""
