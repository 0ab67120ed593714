"""Command-line shells over the library; each module registers one command group."""
