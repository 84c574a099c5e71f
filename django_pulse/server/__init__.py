"""Per-connection server code: transports and their connections (issue 17 moves the WebSocket consumer here)."""
