"""Which models a submit gets: a model set of virnucd's config, or the models it names.

A submit that names a set (`models`) gets that set; one that names no model option at
all gets the `default` set, if the config has one; any other names its models itself,
as before sets existed (and those paths must lie under `model_roots`, which a set's
paths, the admin's own, need not). A submit's `precision` goes with a set too: it
picks how a set's models run, not which models they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from virnuc.model_sets import DEFAULT_SET, ModelSetConfig
from virnuc.pipeline.spec import ModelSpec, ModelSpecError, resolve_spec
from virnuc.protocol import SubmitArgs

from ..config import DaemonConfig


@dataclass(frozen=True)
class ModelChoice:
    """The job's models, and the set they came from (None: the submit named them)."""

    spec: ModelSpec
    model_set: ModelSetConfig | None


def choose_models(args: SubmitArgs, config: DaemonConfig) -> ModelChoice:
    """The set the submit names (or the default set), else its own model options,
    resolved into a spec; raises `ModelSpecError` for options that do not make one, or
    a set this virnucd does not have."""
    model_set = _chosen_set(args, config.models)
    if model_set is None:
        if args.profile is None and args.classifier is None:
            raise ModelSpecError(no_models_named(config.models))
        return ModelChoice(_spec(args, args.precision, config), None)
    precision = args.precision or model_set.precision
    return ModelChoice(_spec(model_set, precision, config), model_set)


def _spec(
    models: SubmitArgs | ModelSetConfig, precision: str | None, config: DaemonConfig
) -> ModelSpec:
    """The spec of the models a submit or a set names, run in `precision` (else the
    daemon's)."""
    return resolve_spec(
        profile=models.profile,
        esm=models.esm,
        dnabert=models.dnabert,
        classifier=models.classifier,
        chunk_length=models.chunk_length,
        precision=precision or config.default_precision,
        cache_dir=config.model_cache,
    )


def _chosen_set(args: SubmitArgs, sets: dict[str, ModelSetConfig]) -> ModelSetConfig | None:
    if args.models is None:
        return None if args.model_choices() else sets.get(DEFAULT_SET)
    if args.models not in sets:
        raise ModelSpecError(unknown_set(args.models, sets))
    return sets[args.models]


def unknown_set(name: str, sets: dict[str, ModelSetConfig]) -> str:
    if not sets:
        return (
            f"no model set {name!r}: this virnucd has none ([models.NAME] tables in its "
            "config); name the models instead (--classifier FILE, or --profile demo)"
        )
    known = ", ".join(s.describe() for s in sets.values())
    return f"no model set {name!r}; this virnucd has: {known}"


def no_models_named(sets: dict[str, ModelSetConfig]) -> str:
    """Why a submit that names no model and gets no default set is refused."""
    if sets:
        known = ", ".join(s.describe() for s in sets.values())
        offer = f"name one of this virnucd's model sets with --models NAME ({known})"
    else:
        offer = "this virnucd has no model sets ([models.default] in its config would serve this)"
    return (
        "no classifier: pass --classifier 300_model.pth (or 500_model.pth) from VirNucPro, "
        f"or --profile demo to try the pipeline with tiny random models; or {offer}"
    )
