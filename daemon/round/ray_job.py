"""The daemon's side of a round's job on a Ray cluster (`round.runner: ray`): the round's inputs onto the exchange,
its job submitted through the Jobs REST API, followed and stopped, its outputs brought back into the round's
work directory (`ray_stages.py` hands them to the recipe as a local round's stages would).

No Ray import: HTTP to the cluster's dashboard and Parquet through pyarrow. The job's submission id is the round's
(`taoflow-<model>-r<id>-<started>-a<attempt>`): a round resumed after the daemon restarted finds its job and
follows it, never submits it twice; a job stopped at shutdown is submitted again as the next attempt, which goes
on from the stages the stopped one finished (and training from its last checkpoint).
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from taoflow.connectors.cluster.exchange import Exchange
from taoflow.connectors.cluster.jobs import JobInfo, RayJobs
from taoflow.connectors.errors import ConfigurationError, RoundError, TemporaryError
from taoflow.connectors.files import write_atomic
from taoflow.connectors.protocols import Completion
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.training.launch import write_job
from taoflow.connectors.training.lora import TrainingConfig
from taoflow.daemon.settings import Settings, ray_runner_problems, ray_token
from taoflow.daemon.store.round_files import ClusterStages, RoundFiles, candidates_line
from taoflow.daemon.store.rounds import RoundRecord

__all__ = ["RayRoundJob", "RoundInputs"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Sections of the settings the job needs (never `storage`, `daemon`, `fleet`, `source`: their secrets stay here).
_SECTIONS = ("model", "generate", "score", "train", "gate", "ray")

#: Most job log lines relayed per look (a job that floods its log cannot flood the daemon's).
_MAX_LINES_PER_POLL = 200


@dataclass(frozen=True)
class RoundInputs:
    """What the job needs from the daemon's state: its prompts (with how many candidates each), the held-out and
    golden prompts, the examples replayed from the champion's rounds, the champion's adapter."""

    prompts: Sequence[PromptRecord]
    candidates: Sequence[int]
    heldout: Sequence[PromptRecord]
    golden: Sequence[PromptRecord]
    replay: Sequence[Any]
    training: TrainingConfig
    champion: str | None
    champion_dir: Path | None


class RayRoundJob:
    """Runs one round's job on the cluster and brings its outputs home."""

    def __init__(self, settings: Settings, *, jobs: RayJobs | None = None, exchange: Exchange | None = None) -> None:
        problems = ray_runner_problems(settings)
        if problems:
            raise ConfigurationError("round.runner is ray, but " + "; ".join(problems))
        r = settings.ray
        assert r.address is not None and r.exchange.uri is not None  # checked above
        self.settings = settings
        self.jobs = jobs or RayJobs(r.address, token=ray_token(settings))
        self.root = exchange or Exchange(r.exchange.uri, endpoint_url=r.exchange.endpoint_url, region=r.exchange.region)

    def run(self, record: RoundRecord, inputs: RoundInputs) -> ClusterStages:
        """The round's job, submitted (or found) and followed to its end; its outputs brought into the round's files.
        Returns what the job's stages reported."""
        if record.files.cluster_stages_file.exists():
            return record.files.cluster_stages()  # home already (a round resumed after it brought them home)
        folder = self.folder(record)
        if not folder.exists("inputs/spec.json"):
            self._write_inputs(folder, record, inputs)
        submission = self._patiently(lambda: self._submitted(record, folder))
        info = self._follow(submission)
        if info.status != "SUCCEEDED":
            raise RoundError(self._failure(folder, info))
        stages = self._bring_home(folder, record.files, submission)
        # Home: the folder's prompts, candidates and scores would otherwise stay on the exchange for good, beyond
        # the reach of an erasure. (A failed job's folder stays for its next attempt, which goes on from it.)
        try:
            folder.remove_all()
        except TemporaryError as exc:
            log.warning("the round's folder %s could not be removed from the exchange: %s", folder.uri, exc)
        return stages

    def folder(self, record: RoundRecord) -> Exchange:
        return self.root.child(self.settings.model.served_name, f"r{record.id:04d}-{record.started_stamp}")

    def stop(self, submission_id: str) -> None:
        try:
            if self.jobs.stop(submission_id):
                log.info("stopped Ray job %s (the next attempt goes on from its finished stages)", submission_id)
        except TemporaryError as exc:
            log.warning("could not stop Ray job %s: %s", submission_id, exc)

    # ------------------------------------------------------------------ inputs
    def _write_inputs(self, folder: Exchange, record: RoundRecord, inputs: RoundInputs) -> None:
        seed = record.id  # the round's offset to generate.seed, as a local round samples
        batch = self.settings.ray.generation.batch
        folder.write_rows(
            "inputs/prompts.parquet",
            [
                # Every generation batch of the job is sampled with the seed of its first prompt.
                {"request_id": p.request_id, "record": p.to_json(), "n": n, "seed": seed + i // batch * batch}
                for i, (p, n) in enumerate(zip(inputs.prompts, inputs.candidates, strict=True))
            ],
            {"request_id": "string", "record": "string", "n": "int64", "seed": "int64"},
        )
        records = {"request_id": "string", "record": "string"}
        folder.write_rows("inputs/heldout.parquet", [_row(p) for p in inputs.heldout], records)
        if inputs.golden:
            folder.write_rows("inputs/golden.parquet", [_row(p) for p in inputs.golden], records)
        if inputs.replay:
            local = record.files.replay_job_file
            write_job(local, Path("."), inputs.replay, inputs.training)
            folder.write_bytes("inputs/replay.json", local.read_bytes())
            local.unlink()  # its examples are prompts: the exchange's copy is the one the job reads
        if inputs.champion_dir is not None:
            folder.put_dir("inputs/champion", inputs.champion_dir)
        sections = {
            name: getattr(self.settings, name).model_dump(mode="json", exclude=_EXCLUDED.get(name))
            for name in _SECTIONS
        }
        folder.write_json(
            "inputs/spec.json", {"round": record.id, "champion": inputs.champion, "sections": sections}
        )  # last: a folder with a spec has all its inputs

    # ------------------------------------------------------------------ the job
    def _submitted(self, record: RoundRecord, folder: Exchange) -> str:
        """The round's job: the one already submitted (still running, or finished), or a new attempt."""
        known = record.files.cluster_job()
        attempt = int(known["attempt"]) if known is not None else 1
        while True:
            submission = self._submission_id(record, attempt)
            info = self.jobs.info(submission)
            if info is None:
                break
            if info.status != "STOPPED":
                log.info("round %d: following Ray job %s (%s)", record.id, submission, info.status)
                return submission
            attempt += 1  # stopped at a shutdown: the next attempt goes on from its finished stages
        record.files.write_cluster_job({"attempt": attempt, "submission_id": submission, "exchange": folder.uri})
        r = self.settings.ray
        command = [r.python, "-m", "taoflow.daemon.round.on_ray", "--exchange", folder.uri]
        if r.exchange.endpoint_url:
            command += ["--endpoint-url", r.exchange.endpoint_url]
        if r.exchange.region:
            command += ["--region", r.exchange.region]
        self.jobs.submit(
            submission,
            shlex.join(command),
            metadata={"taoflow_model": self.settings.model.served_name, "taoflow_round": str(record.id)},
        )
        log.info("round %d: submitted Ray job %s to %s", record.id, submission, self.jobs.address)
        return submission

    def _submission_id(self, record: RoundRecord, attempt: int) -> str:
        return f"taoflow-{self.settings.model.served_name}-r{record.id:04d}-{record.started_stamp}-a{attempt}"

    def _follow(self, submission: str) -> JobInfo:
        """Poll the job to its end, relaying its new log lines; a job the cluster does not start within
        ray.placement_timeout_seconds is stopped and the round failed; an interrupted round stops its job."""
        r = self.settings.ray
        relayed: str | None = None
        pending_since: float | None = None
        try:
            while True:
                info = self._patiently(lambda: self._look(submission))
                relayed = self._relay(submission, relayed)
                if info.done:
                    return info
                if info.status == "PENDING":
                    pending_since = pending_since or time.monotonic()
                    if time.monotonic() - pending_since > r.placement_timeout_seconds:
                        self.stop(submission)
                        raise RoundError(
                            f"the Ray cluster did not start job {submission} within ray.placement_timeout_seconds "
                            f"({r.placement_timeout_seconds:g} s): {info.message or 'no room for its driver'}"
                        )
                else:
                    pending_since = None
                time.sleep(r.poll_seconds)
        except BaseException as exc:
            if not isinstance(exc, RoundError | TemporaryError):
                self.stop(submission)  # shutdown or cancel: the job does not run on without its round
            raise

    def _patiently(self, call: Callable[[], _T]) -> _T:
        """`call()`, again while the Jobs API does not answer (a head node restarting), for up to
        ray.placement_timeout_seconds; an interrupted round stops waiting at once."""
        deadline = time.monotonic() + self.settings.ray.placement_timeout_seconds
        while True:
            try:
                return call()
            except TemporaryError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("%s; trying again", exc)
                time.sleep(self.settings.ray.poll_seconds)

    def _look(self, submission: str) -> JobInfo:
        info = self.jobs.info(submission)
        if info is None:
            raise RoundError(f"the Ray cluster no longer knows job {submission} (was the head node replaced?)")
        return info

    def _relay(self, submission: str, last: str | None) -> str | None:
        """Log the job's lines after `last` (the last line relayed, found again in the log's tail window);
        returns the new last line. A line still being written waits for the next look."""
        try:
            text = self.jobs.logs(submission)
        except TemporaryError:
            return last
        whole = text[: text.rfind("\n") + 1]
        if last is not None:
            at = whole.rfind(last + "\n")
            whole = whole[at + len(last) + 1 :] if at >= 0 else whole
        lines = whole.splitlines()
        for line in lines[-_MAX_LINES_PER_POLL:]:
            log.info("ray job | %s", line[:2000])
        return lines[-1] if lines else last

    def _failure(self, folder: Exchange, info: JobInfo) -> str:
        reason = info.message.strip().splitlines()[-1:] or [info.status]
        if folder.exists("outputs/failed.json"):
            reason = [str(folder.read_json("outputs/failed.json").get("reason", ""))[:2000]]
        return f"Ray job {info.submission_id} {info.status.lower()}: {reason[0][:2000]}"

    # ------------------------------------------------------------------ outputs
    def _bring_home(self, folder: Exchange, files: RoundFiles, submission: str) -> ClusterStages:
        """The job's outputs into the round's files, where a local round keeps its own (candidates, scores, the
        adapter, the gate's evaluations), and what each stage reported."""
        reported = {s: folder.read_json(f"outputs/{s}.json") for s in _STAGES if folder.exists(f"outputs/{s}.json")}
        stages = ClusterStages.from_json(
            {"job": submission, **reported, "nothing_to_learn": folder.exists("outputs/nothing-to-learn.json")}
        )
        lines = [
            candidates_line(row["request_id"], [Completion(**c) for c in json.loads(row["candidates"])])
            for row in folder.read_rows("outputs/candidates")
        ]
        write_atomic(files.candidates_file, "".join(f"{line}\n" for line in lines))
        write_atomic(files.scored_file, "".join(row["scored"] + "\n" for row in folder.read_rows("outputs/scored")))
        if stages.evaluated:
            folder.get_dir("outputs/adapter", files.adapter_dir)
            write_atomic(files.evaluations_file, folder.read_bytes("outputs/evaluations.json"))
        files.write_cluster_stages(stages)
        return stages


#: The job's stages, each reported in outputs/<stage>.json.
_STAGES = ("generate", "score", "train", "evaluate")

#: Fields of a section that never leave the daemon's side.
_EXCLUDED: dict[str, set[str]] = {"ray": {"token"}, "gate": {"golden_file"}}


def _row(record: PromptRecord) -> dict[str, str]:
    return {"request_id": record.request_id, "record": record.to_json()}
