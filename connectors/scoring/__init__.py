"""Label-free scorers: verifiers (rules, JSON schema, SQL, Python), self-consistency, the weighted composite."""
