"""The vLLM serving fleet: replica discovery and each replica's runtime LoRA and OpenAI APIs.

All HTTP goes through one `httpx.Client` per replica; tests of the failure paths pass an
`httpx.MockTransport`, every other test talks to real vLLM servers. Errors are mapped
once, here: a replica that does not answer (or answers 5xx on a read) is
`ReplicaUnavailable` (retry later); a replica that answers and refuses an adapter is
`DeployError` (the adapter is the problem).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import httpx

from taoflow.connectors.errors import DeployError, ReplicaUnavailable
from taoflow.connectors.protocols import Completion, ReplicaView, SamplingConfig
from taoflow.connectors.records import Chat

__all__ = ["ReplicaView", "VllmReplica", "discover_replicas"]


def discover_replicas(static: Sequence[str], *, dns_name: str | None = None, port: int = 8000) -> list[str]:
    """Replica base URLs: the static list, plus every address of a (headless service) DNS name.

    Called again on every reconcile, so pods added by a scale-out are seen within one interval.
    """
    urls = [u.rstrip("/") for u in static]
    if dns_name:
        try:
            infos = socket.getaddrinfo(dns_name, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ReplicaUnavailable(dns_name, f"DNS lookup failed: {exc}") from None
        for address in sorted({str(info[4][0]) for info in infos}):
            host = f"[{address}]" if ":" in address else address
            urls.append(f"http://{host}:{port}")
    return list(dict.fromkeys(urls))


class VllmReplica:
    """A `ServingReplica`: one vLLM OpenAI-compatible server with `--enable-lora` and runtime LoRA updating."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"VllmReplica({self.url})"

    # ------------------------------------------------------------------ reads
    def view(self) -> ReplicaView:
        """The served models (`/v1/models`): the base (no parent) and LoRA adapters (with a parent)."""
        data = self._request("GET", "/v1/models").json()
        base, adapters = "", {}
        for card in data.get("data", []):
            if card.get("parent"):
                adapters[str(card["id"])] = str(card.get("root", ""))
            else:
                base = str(card["id"])
        return ReplicaView(base=base, adapters=adapters)

    def metrics(self) -> str:
        return self._request("GET", "/metrics").text

    # ------------------------------------------------------------------ LoRA
    def load(self, name: str, path: str) -> None:
        """Serve the adapter at `path` as `name` (a name it does not serve yet: see `replace_adapter`)."""
        body = {"lora_name": name, "lora_path": path}
        response = self._request("POST", "/v1/load_lora_adapter", json=body, refusals=True)
        if response.status_code != 200:
            raise DeployError(
                f"replica {self.url} refused adapter {path} as {name!r}: HTTP {response.status_code}: "
                f"{_message(response)}"
            )

    def unload(self, name: str) -> bool:
        """Stop serving `name`; False when it was not loaded."""
        response = self._request("POST", "/v1/unload_lora_adapter", json={"lora_name": name}, refusals=True)
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise DeployError(f"replica {self.url} could not unload {name!r}: {_message(response)}")
        return True

    # ------------------------------------------------------------------ OpenAI API
    def chat(self, model: str, chat: Chat, sampling: SamplingConfig) -> list[Completion]:
        """`sampling.n` completions of one conversation in one request (`n=`). Its tools are rendered into the prompt
        with `tool_choice: none`: the answer comes back as the model wrote it, calls included, and the round reads
        the calls with its own parser (the replica needs no tool parser of its own)."""
        body: dict[str, Any] = {
            "model": model,
            "messages": [m.as_dict() for m in chat.messages],  # the API's shape: arguments as JSON text
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
            "seed": sampling.seed,
        }
        if chat.tools:
            body.update(tools=chat.template_tools(), tool_choice="none")
        data = self._request("POST", "/v1/chat/completions", json=body, read_timeout_s=600.0).json()
        choices = sorted(data["choices"], key=lambda c: c["index"])
        tokens = int(data.get("usage", {}).get("completion_tokens", 0))
        per_choice = tokens // max(1, len(choices))
        return [
            Completion(
                text=(c["message"].get("content") or "").strip(),
                num_tokens=per_choice,
                finished=c.get("finish_reason") == "stop",
            )
            for c in choices
        ]

    # ------------------------------------------------------------------ plumbing
    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        refusals: bool = False,
        read_timeout_s: float | None = None,
    ) -> httpx.Response:
        timeout = httpx.USE_CLIENT_DEFAULT if read_timeout_s is None else httpx.Timeout(10.0, read=read_timeout_s)
        try:
            response = self._http.request(method, path, json=json, timeout=timeout)
        except httpx.HTTPError as exc:
            raise ReplicaUnavailable(self.url, f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 500 and not refusals:
            raise ReplicaUnavailable(self.url, f"{method} {path}: HTTP {response.status_code}: {_message(response)}")
        if response.status_code >= 400 and not refusals:
            raise DeployError(f"replica {self.url}: {method} {path}: HTTP {response.status_code}: {_message(response)}")
        return response


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message", error))[:300]
        return str(error)[:300]
    return str(data)[:300]
