"""The serving replicas: the vLLM runtime-LoRA and OpenAI client, and the adapter preflight."""
