"""One process of a distributed training step: `python -m taoflow.connectors.training.worker JOB` under
`accelerate launch` (see `launch.py`). Every process trains; the first reports steps and writes the result."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from taoflow.connectors.lifetime import exit_with
from taoflow.connectors.training.launch import STEP_MARK, read_job, write_result
from taoflow.connectors.training.lora import train_adapter


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m taoflow.connectors.training.worker JOB_FILE", file=sys.stderr)
        return 2
    owner = os.environ.get("TAOFLOW_TRAIN_OWNER")
    if owner and owner.isdigit():
        exit_with(int(owner))  # a round killed outright leaves no training process behind
    job = Path(argv[0])
    base, examples, config = read_job(job)
    first = os.environ.get("RANK", "0") == "0"

    def step(done: int) -> None:
        if first:
            print(STEP_MARK, flush=True)

    result = train_adapter(base, examples, config, work_dir=job.parent, progress=step)
    if first:
        write_result(job.parent / "distributed-result.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
