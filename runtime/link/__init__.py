"""The outbound link to the control plane (`agentd connect`, local-mac mode).

- `protocol`: the wire contract (names, timings, JSON-RPC frames).
- `client`: the WebSocket, kept up forever; serves `http` and `http.cancel`.
- `dispatch`: an `http` request, sent to the daemon's own local API.
- `outbox`: persisted thread events, pushed to the control plane from a durable outbox.
- `connect`: the daemon plus the link and the outbox.
"""
