"""sam2-service: the HTTP/WebSocket service around model_core (and its command line)."""
