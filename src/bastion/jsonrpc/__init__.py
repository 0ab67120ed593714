"""JSON-RPC 2.0 framing: error codes and the cheap envelope parser."""
