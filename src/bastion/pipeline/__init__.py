"""The request pipeline: stage protocol and the runner that builds the onion once."""
