"""The Ray Jobs REST API (`/api/jobs/`): submit, look up, follow the logs of and stop one job.

No Ray import: the daemon's side talks HTTP to the cluster's dashboard, with the cluster's token as a bearer
token (Ray's `RAY_AUTH_MODE=token`). Tests of the failure paths pass an `httpx.MockTransport`; every other test
talks to a real cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from taoflow.connectors.errors import ConfigurationError, RoundError, TemporaryError

__all__ = ["TERMINAL", "JobInfo", "RayJobs"]

#: Statuses a job never leaves.
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})

#: Most log bytes kept of one look at a job's logs (its tail: the logs endpoint returns them whole).
_LOG_TAIL_BYTES = 1 << 20


@dataclass(frozen=True)
class JobInfo:
    submission_id: str
    status: str  # PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED
    message: str
    start_time: float | None
    end_time: float | None
    metadata: dict[str, str]

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class RayJobs:
    """One cluster's Jobs API."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.address = address.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.address, timeout=timeout_s, headers=headers, transport=transport)

    def submit(
        self,
        submission_id: str,
        entrypoint: str,
        *,
        metadata: dict[str, str] | None = None,
        entrypoint_num_cpus: float = 0.0,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        """Submit a job under `submission_id`; the cluster refuses a second submission with the same id (callers
        look the id up first: `info`)."""
        body: dict[str, Any] = {
            "entrypoint": entrypoint,
            "submission_id": submission_id,
            "metadata": metadata or {},
            "entrypoint_num_cpus": entrypoint_num_cpus,
        }
        if runtime_env:
            body["runtime_env"] = runtime_env
        response = self._request("POST", "/api/jobs/", json=body)
        if response.status_code != 200:
            raise RoundError(
                f"the Ray cluster at {self.address} refused job {submission_id}: HTTP {response.status_code}: "
                f"{_brief(response.text)}"
            )

    def info(self, submission_id: str) -> JobInfo | None:
        """The job's status, or None when the cluster has no job of that id."""
        response = self._request("GET", f"/api/jobs/{submission_id}")
        if response.status_code == 404:
            return None
        self._check(response, f"look up job {submission_id}")
        data = response.json()
        return JobInfo(
            submission_id=str(data.get("submission_id") or submission_id),
            status=str(data.get("status", "")),
            message=str(data.get("message") or ""),
            start_time=_seconds(data.get("start_time")),
            end_time=_seconds(data.get("end_time")),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        )

    def logs(self, submission_id: str) -> str:
        """The job's driver log (its last MiB)."""
        response = self._request("GET", f"/api/jobs/{submission_id}/logs")
        self._check(response, f"read the logs of job {submission_id}")
        text = str(response.json().get("logs", ""))
        return text[-_LOG_TAIL_BYTES:]

    def stop(self, submission_id: str) -> bool:
        """Ask the cluster to stop the job; False when it had already ended."""
        response = self._request("POST", f"/api/jobs/{submission_id}/stop")
        if response.status_code == 404:
            return False
        self._check(response, f"stop job {submission_id}")
        return bool(response.json().get("stopped", False))

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise TemporaryError(
                f"the Ray cluster's Jobs API at {self.address} did not answer ({type(exc).__name__}): is ray.address "
                "right and the head node up?"
            ) from None
        if response.status_code in (401, 403):
            raise ConfigurationError(
                f"the Ray cluster at {self.address} refused taoflow's token (HTTP {response.status_code}): set "
                "ray.token (or ray.token_file) to the cluster's RAY_AUTH_TOKEN"
            )
        return response

    def _check(self, response: httpx.Response, what: str) -> None:
        said = f"HTTP {response.status_code}: {_brief(response.text)}"
        if response.status_code >= 500:
            raise TemporaryError(f"the Ray cluster could not {what}: {said}")
        if response.status_code != 200:
            raise RoundError(f"the Ray cluster would not {what}: {said}")


def _seconds(milliseconds: Any) -> float | None:
    return float(milliseconds) / 1000.0 if isinstance(milliseconds, int | float) else None


def _brief(text: str) -> str:
    """The end of an error body (Ray answers some errors with a whole traceback): its last line, bounded."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:300]
