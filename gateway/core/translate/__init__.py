"""Pure translation between the Responses API and chat completions.

- ``request``: a decoded ``ResponsesRequest`` → the chat request body.
- ``inputs``: Responses ``input`` items (and ``instructions``) → chat messages.
- ``tools``: function, custom and namespace tools → chat tools, the upstream names
  that map calls back (``ToolNames``), hosted tools refused or dropped.
- ``response``: a chat completion → Responses output items and the response.
"""
