"""Everything durable: one SQLite database (buffer, dead letters, registry, rounds, deploys, leases, controls)."""
