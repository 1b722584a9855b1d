"""taoflow's benchmarks: `python -m bench.<name> [--smoke]` from the repository root, each printing its figures
against a reference measured in the same run (README.md, Measurements, lists what each measures).

    lib/        what benchmarks share: the command line (`--smoke`), the demo's tasks and records, rounds run as
                `taoflow round` does, the fleet's servers and load, the vLLM side's driver program

CI runs every benchmark at its `--smoke` size (tests/test_bench.py): the smallest run that goes through every
path of it, whose figures mean nothing.
"""
