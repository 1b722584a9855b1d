"""`taoflow gateway`: the OpenAI-compatible proxy in front of the fleet, routing and capture."""
