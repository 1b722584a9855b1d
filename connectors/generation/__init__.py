"""Candidate generation backends (transformers, vLLM's engine, the serving fleet) and the base model."""
