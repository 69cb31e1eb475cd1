"""Live events: a per-user WebSocket stream at /ws/events/ fed through the channel layer."""
