"""The proxy core: client sessions, their reply streams, and how messages are routed between a
client and one (per-server endpoint) or all (federated endpoint) upstreams."""
