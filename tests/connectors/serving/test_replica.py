"""The fleet client's error mapping (faults a real server cannot be made to produce on demand are
served by httpx.MockTransport; tests/e2e/test_fleet.py runs the same client against real vLLM)."""

import httpx
import pytest

from taoflow.connectors.errors import DeployError, ReplicaUnavailable
from taoflow.connectors.serving.replica import VllmReplica, discover_replicas
from tests.support.ports import free_port


def replica(handler):
    return VllmReplica("http://replica:8000", transport=httpx.MockTransport(handler))


def test_a_server_error_on_a_read_is_temporary_and_names_the_replica():
    with pytest.raises(ReplicaUnavailable, match="replica http://replica:8000: GET /v1/models: HTTP 503"):
        replica(lambda request: httpx.Response(503, text="overloaded")).view()


def test_a_refused_adapter_is_permanent_with_the_servers_message():
    refusal = {"error": {"message": "LoRA rank 64 is greater than max_lora_rank 16", "code": 400}}
    with pytest.raises(DeployError, match="refused adapter /a/v2 as 'bot': HTTP 400: LoRA rank 64 is greater"):
        replica(lambda request: httpx.Response(400, json=refusal)).load("bot", "/a/v2")


def test_unloading_what_is_not_loaded_is_not_an_error():
    assert (
        replica(lambda request: httpx.Response(404, json={"error": {"message": "cannot be found"}})).unload("x")
        is False
    )


def test_the_api_key_is_sent():
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return httpx.Response(
            200, json={"data": [{"id": "/m", "parent": None}, {"id": "bot", "parent": "/m", "root": "/a"}]}
        )

    client = VllmReplica("http://r:1", api_key="k3y", transport=httpx.MockTransport(handler))
    view = client.view()
    assert (view.base, view.adapters, seen) == ("/m", {"bot": "/a"}, ["Bearer k3y"])


def test_nothing_listening_is_unavailable():
    with pytest.raises(ReplicaUnavailable, match="ConnectError"):
        VllmReplica(f"http://127.0.0.1:{free_port()}", timeout_s=1).view()


def test_replicas_from_a_static_list_and_a_dns_name_re_resolved_each_time():
    urls = discover_replicas(["http://a:8000/", "http://a:8000"], dns_name="localhost", port=8123)
    assert urls[0] == "http://a:8000" and "http://127.0.0.1:8123" in urls and len(urls) == len(set(urls))
    with pytest.raises(ReplicaUnavailable, match="DNS lookup failed"):
        discover_replicas([], dns_name="no-such-service.invalid")
