"""Checks that span sections: settings each valid alone that cannot work together."""

from __future__ import annotations

from taoflow.daemon.settings.root import Settings

__all__ = ["known_tasks", "ray_runner_problems"]


def ray_runner_problems(settings: Settings) -> list[str]:
    """What stops `round.runner: ray` from running a round with these settings (empty: nothing)."""
    if settings.round.runner != "ray":
        return []
    problems = []
    if settings.ray.address is None:
        problems.append("ray.address is unset: the Ray cluster's dashboard, e.g. http://raycluster-head-svc:8265")
    if settings.ray.exchange.uri is None:
        problems.append("ray.exchange.uri is unset: s3://bucket/prefix (or a path both sides mount) for the rounds")
    if settings.generate.backend == "fleet":
        problems.append("generate.backend fleet generates on the serving fleet, not the cluster: use transformers")
    if settings.train.objective == "grpo":
        problems.append("train.objective grpo is not run on Ray yet: use sft or dpo, or round.runner local")
    every = [*settings.score.tasks.values(), *settings.gate.scorers.values(), settings.score.default]
    model_scorers = sorted({s.type for specs in every for s in specs} & {"reward_model", "self_certainty"})
    if model_scorers:
        problems.append(
            f"scorers {', '.join(model_scorers)} fit statistics over the whole round, which Ray's scoring batches "
            "split: score with verifiers or a judge, or use round.runner local"
        )
    return problems


def known_tasks(settings: Settings) -> frozenset[str] | None:
    """The tasks prompts are buffered for (ingest.tasks, or score.tasks with task_map's targets and default_task);
    None: every task a log names (nothing configured)."""
    i = settings.ingest
    if i.tasks is not None:
        return frozenset([*i.tasks, i.default_task])
    if not settings.score.tasks:
        return None
    return frozenset([*settings.score.tasks, *i.task_map.values(), i.default_task])
