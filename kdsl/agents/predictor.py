"""The predictor: a decider, its rules and an arbiter policy, behind one `predict(samples)` for serving and batch use.

A decider folder written by `kdsl train` and measured by `kdsl eval` holds everything prediction needs: the card
(base model, adapter, prompt, label spaces), the calibration, and `collaboration.json` (the rules with their
verify statistics and each policy's fitted arbiter). Without `collaboration.json` the predictor serves the rules it
is given, with no verify statistics, under a policy that needs no fitting, and says so in the log.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kdsl.agents.arbiter import POLICIES, Arbiter, ArbiterConfig, Decision, Policy
from kdsl.agents.collaboration import Collaboration
from kdsl.agents.decider import CALIBRATION, Calibration, Decider, DeciderCard, decider_folder
from kdsl.agents.evaluation import fired_rules
from kdsl.data.sample import Sample
from kdsl.errors import ConfigError, DataError
from kdsl.rules import Rule, RuleSet
from kdsl.tools.builder import FeatureBuilder
from kdsl.tools.features import FeatureTable

logger = logging.getLogger(__name__)

FALLBACK_POLICY: Policy = "decider_first"
REMOTE_BACKENDS = ("openai",)  # the model (and its adapter) lives in a server the backend calls


class PredictorInfo(BaseModel):
    """What a predictor serves, for /healthz, logs and the provenance of a batch of predictions."""

    model_config = ConfigDict(frozen=True)

    decider: str = Field(description="The decider's name (from its card).")
    folder: str
    base_model: str
    backend: str = Field(description="The `backend:model` spec the decider runs on.")
    adapter: str | None = None
    policy: Policy
    tasks: tuple[str, ...]
    rules: int
    rules_source: str = Field(description="Where the rules came from: the collaboration, a file, or none.")
    verify_stats: bool = Field(description="True when the rules carry statistics measured on the verify split.")
    images: bool = Field(description="Whether images are read (OCR and visual labels) into the features.")
    calibrated: bool


def backend_spec(spec: str | None, card: DeciderCard) -> str:
    """The `backend:model` the decider runs on: the card's, or `spec` overriding it.

    `spec` is either a full `backend:model` (e.g. `openai:http://127.0.0.1:8001/v1`) or a bare backend name
    (e.g. `vllm`), which runs the card's base model on that backend.
    """
    from kdsl.models.base import BackendSpec

    if not spec:
        return f"{card.backend}:{card.base_model}"
    backend, sep, model = spec.partition(":")
    if not sep:
        spec = f"{backend}:{card.base_model}"
    elif not model:
        raise ConfigError(f"backend spec {spec!r} names no model after {backend!r}:; give 'BACKEND' alone to run "
                          f"the card's base model ({card.base_model}) on it")
    try:
        return str(BackendSpec.parse(spec))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _accepts_adapter(spec: str) -> bool:
    """Whether the backend named in `spec` loads a local peft adapter folder. A backend that reaches a server
    (`openai`) takes the name of an adapter the server serves instead, so it is given none here."""
    from kdsl.models.base import BackendSpec, backend_class

    name = BackendSpec.parse(spec).backend
    return name not in REMOTE_BACKENDS and "adapter" in inspect.signature(backend_class(name).__init__).parameters


def _load_decider(folder: Path, settings: Any, backend: str | None, backend_options: dict[str, Any]) -> Any:
    """The decider of `folder` on its own or the given backend, its calibration read but its score cache kept in
    memory only: serving must not grow the folder's cache file with every request. A decider of another kind than
    `lora` loads through its kind (it has no model backend to choose)."""
    from kdsl.agents.decider_kinds import LORA, card_kind, load_decider
    from kdsl.models.base import load_backend

    if card_kind(folder) != LORA:
        if backend:
            raise ConfigError(f"{folder}: a {card_kind(folder)} decider runs no language model; --backend is for "
                              "lora deciders")
        threads = backend_options.get("threads")
        return load_decider(folder, settings, **({"threads": threads} if threads else {}))
    card = DeciderCard.load(folder)
    spec = backend_spec(backend, card)
    options = dict(backend_options)
    if card.adapter:
        if _accepts_adapter(spec):
            options.setdefault("adapter", folder / card.adapter)
        elif "adapter" not in options:
            logger.warning("the %s backend loads no local adapter: serve %s there (vllm serve ... --enable-lora "
                           "--lora-modules NAME=PATH) and name it in the spec (openai:URL#NAME) or with "
                           "adapter=NAME", spec, folder / card.adapter)
    decider = Decider(load_backend(spec, settings, **options), card, folder=None)
    if (folder / CALIBRATION).is_file():
        decider.calibration_ = Calibration.model_validate_json((folder / CALIBRATION).read_text(encoding="utf-8"))
    else:
        logger.warning("decider %s is not calibrated (no %s): probabilities use temperature 1", card.name, CALIBRATION)
    return decider


def _with_stats(rules: RuleSet, known: RuleSet) -> RuleSet:
    """`rules`, each carrying the statistics of the rule with the same id in `known` when it has none itself."""
    stats = {r.id: r.stats for r in known.rules if r.stats is not None}
    return RuleSet(rules=tuple(r.model_copy(update={"stats": stats[r.id]}) if r.stats is None and r.id in stats else r
                               for r in rules.rules))


class Predictor:
    """A decider plus its collaboration (rules and an arbiter policy) plus the feature builder.

    `predict` is serialized by a lock: the model backends are not thread-safe, so concurrent callers take turns.

    Args:
        decider: the (calibrated) decider.
        rules: the rules it decides with, ideally carrying verify statistics.
        arbiter: the policy (and fitted weights) that combines them.
        builder: turns samples into features (dialogue text, OCR text, visual labels).
        folder: the decider's folder, for provenance.
        rules_source: where the rules came from, for provenance.
        cache_entries: label scores kept in memory for repeated samples; 0 keeps none. Sets the decider's
            `cache_limit`.
    """

    def __init__(
        self, decider: Decider, rules: RuleSet, arbiter: Arbiter, builder: FeatureBuilder, *,
        folder: Path | None = None, rules_source: str = "given", cache_entries: int = 4096,
    ):
        spaces = decider.card.label_spaces
        kept = tuple(r for r in rules.rules if r.label in spaces.get(r.task, ()))
        if len(kept) < len(rules):
            logger.info("%d of %d rules are for tasks or labels this decider does not serve; left out",
                        len(rules) - len(kept), len(rules))
        self.decider = decider
        self.rules = RuleSet(rules=kept)
        self.arbiter = arbiter
        self.builder = builder
        self.folder = folder
        self.rules_source = rules_source
        decider.cache_limit = cache_entries
        self._by_id = {r.id: r for r in self.rules.rules}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, decider: str | Path, settings: Any = None, policy: Policy | str = "stacked", backend: str | None = None,
        rules: RuleSet | str | Path | None = None, *, images: bool | None = None, progress: bool = False,
        cache_entries: int = 4096, **backend_options: Any,
    ) -> Predictor:
        """Load a decider by name (under KDSL_HOME/deciders) or folder, with its collaboration.

        Args:
            decider: name or folder of the decider.
            settings: kdsl Settings (KDSL_HOME: packs, feature cache); None reads the environment.
            policy: `stacked`, `rules_first` or `decider_first`. Without `collaboration.json`, `stacked` (which
                needs weights fitted on verify) falls back to `decider_first`.
            backend: run the decider on another backend: `backend:model`, or a backend name for the card's model.
            rules: rules (a RuleSet or a rules file) instead of the collaboration's; their statistics come from the
                collaboration where a rule id matches.
            images: read images into features (OCR, visual labels); default: as the decider was trained.
            progress: show the feature builder's progress bar.
            cache_entries: label scores kept in memory for repeated samples.
            backend_options: passed to the backend (e.g. `threads=2`).
        """
        from kdsl.config import Settings
        from kdsl.tools.pipeline import default_builder

        settings = settings or Settings()
        if policy not in POLICIES:
            raise ConfigError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
        folder = decider_folder(decider, settings)
        asked = policy
        given = RuleSet.load(rules) if isinstance(rules, str | Path) else rules
        collaboration = Collaboration.load(folder)
        if collaboration is not None:
            arbiter = collaboration.arbiter(policy)
            if given is not None:
                chosen = _with_stats(given, collaboration.rules)
                source = "given rules" if isinstance(rules, RuleSet) else str(rules)
                logger.info("serving %d given rules instead of the collaboration's %d (verify statistics by rule id)",
                            len(given), len(collaboration.rules))
            else:
                chosen, source = collaboration.rules, f"{folder.name}/collaboration.json"
        else:
            chosen = given or RuleSet()
            source = str(rules) if isinstance(rules, str | Path) else ("given rules" if given else "none")
            policy = FALLBACK_POLICY if policy == "stacked" else policy
            arbiter = Arbiter(ArbiterConfig(policy=policy))  # type: ignore[arg-type]
        model = _load_decider(folder, settings, backend, backend_options)
        read_images = bool(model.card.training.get("images", True)) if images is None else images
        builder = default_builder(settings, images=read_images, progress=progress)
        predictor = cls(model, chosen, arbiter, builder, folder=folder, rules_source=source,
                        cache_entries=cache_entries)
        if collaboration is None:
            logger.warning(
                "no collaboration.json in %s (`kdsl eval --decider %s` measures rules on verify and fits the "
                "arbiters): serving %d rule(s) from %s without verify statistics under the %s policy%s",
                folder, folder.name, len(predictor.rules), source, policy,
                f" instead of {asked}" if asked != policy else "")
        logger.info("predictor ready: %s", predictor.info.model_dump_json())
        return predictor

    # --- what it serves -----------------------------------------------------------------------------------

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.decider.card.tasks

    @property
    def label_spaces(self) -> dict[str, tuple[str, ...]]:
        return self.decider.card.label_spaces

    @property
    def images(self) -> bool:
        return self.builder.ocr is not None or self.builder.labeler is not None

    def rule(self, rule_id: str) -> Rule | None:
        return self._by_id.get(rule_id)

    @property
    def info(self) -> PredictorInfo:
        card = self.decider.card
        model = getattr(self.decider, "backend", None)  # only a lora decider runs a language model
        backend = f"{model.info.backend}:{model.info.model}" if model is not None else f"{card.kind}:{card.base_model}"
        return PredictorInfo(
            decider=card.name, folder=str(self.folder or ""), base_model=card.base_model,
            backend=backend, adapter=model.info.adapter if model is not None else None,
            policy=self.arbiter.config.policy, tasks=card.tasks, rules=len(self.rules),
            rules_source=self.rules_source, verify_stats=any(r.stats is not None for r in self.rules.rules),
            images=self.images, calibrated=bool(self.decider.calibration_.temperatures),
        )

    # --- prediction ---------------------------------------------------------------------------------------

    def check(self, sample: Sample) -> None:
        """Raise DataError (code `unknown_task`, `unknown_label` or `empty_dialogue`) for a sample it cannot take."""
        if sample.task not in self.label_spaces:
            raise DataError(f"unknown task {sample.task!r}; this decider serves {', '.join(self.tasks)}",
                            sample_id=sample.id, code="unknown_task")
        space = set(self.label_spaces[sample.task])
        unknown = [c for c in sample.candidates if c not in space]
        if unknown:
            raise DataError(f"candidate {unknown[0]!r} is not a label of task {sample.task!r}",
                            sample_id=sample.id, code="unknown_label")
        if sample.is_empty:
            raise DataError("the dialogue is empty: no text in any turn and no image",
                            sample_id=sample.id, code="empty_dialogue")

    def features(self, samples: Sequence[Sample]) -> FeatureTable:
        return self.builder.build(samples)

    def predict(self, samples: Sequence[Sample], progress: Callable[[int], None] | None = None) -> list[Decision]:
        """One explained decision per sample (same order). Sample ids must be unique within the call.

        Raises:
            DataError: a sample of an unknown task, with labels outside the task, or empty.
            FeatureError: an image cannot be read.
            ModelError: the model backend failed.
        """
        samples = list(samples)
        if not samples:
            return []
        if len({s.id for s in samples}) != len(samples):
            raise DataError("sample ids must be unique within one predict call", code="duplicate_id")
        for s in samples:
            self.check(s)
        with self._lock:
            start = time.perf_counter()
            features = self.builder.build(samples)
            dists = self.decider.predict(samples, features, progress)
            fired = fired_rules(list(self.rules.rules), samples, features)
            decisions = self.arbiter.decide_all(dists, fired)
            logger.debug("predicted %d sample(s) in %.2f s", len(samples), time.perf_counter() - start)
        return decisions

    def warmup(self) -> float:
        """Score one short sample of the first task (the first call of a model is slow); returns seconds."""
        from kdsl.data.sample import Turn

        start = time.perf_counter()
        with self._lock:
            sample = Sample(id="warmup", task=self.tasks[0], turns=(Turn(role="user", text="hello"),))
            self.decider.predict([sample], self.builder.build([sample]))
        return time.perf_counter() - start

    def close(self) -> None:
        with self._lock:
            self.decider.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
