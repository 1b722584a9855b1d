"""What benchmarks share (cli, tasks, records, rounds, fleet) and the vLLM side's driver (vllm_driver)."""
