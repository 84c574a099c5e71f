"""What runs in the ASGI process (consumer, hub, outbox, control plane, runtime; issue 17's layout)."""
