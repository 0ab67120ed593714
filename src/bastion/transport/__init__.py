"""Edge adapters: bytes on a wire ↔ JSON-RPC messages. No policy lives here."""
