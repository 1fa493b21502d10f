"""What ``trilho serve`` holds: the model it answers with, the alias it follows, the batches it runs.

``load_served`` loads a logged model as ``trilho predict`` does (its files checked against what
was logged, no pickle) and keeps what answering needs: the encoding spec, the classifier's
probability function and, where the model has one, its explainer. ``Follower`` looks the model's
alias up every ``refresh_s`` seconds and, when it points at another version, loads that version
beside the one serving and swaps them in one assignment: a request already running finishes on
the model it started with, and none waits for the load. ``Batcher`` runs the class probabilities
of the requests that arrive together in one call of the model.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trilho.model.answers import class_probabilities, decided, predicted_values
from trilho.serving.protocol import model_frame
from trilho.tracking.model import load_model, resolve_model

__all__ = ["Batcher", "Follower", "ServedModel", "load_served"]

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    """A loaded model and who it is."""

    requested: str  # the URI as asked for (an alias is followed)
    uri: str        # the version it resolved to
    name: str
    version: str
    run_id: str
    spec: dict[str, Any]
    proba: Callable[[Any], np.ndarray]
    explainer: Callable[..., dict[str, np.ndarray]] | None
    matrix: bool

    def __post_init__(self) -> None:
        features, categorical = self.spec["features"], self.spec["categorical"]
        self.numeric_at = tuple(j for j, c in enumerate(features) if categorical.get(c, False) is False)
        self.numeric = tuple(features[j] for j in self.numeric_at)
        # what the prediction log keeps as sent: the categories and the rows' identifiers
        self.kept = (*(c for c in features if c not in self.numeric), *self.spec.get("identifiers", []))
        self.classes = tuple(str(c) for c in self.spec["classes"])

    def decide(self, proba: np.ndarray) -> np.ndarray:
        return decided(proba, self.spec.get("decision"))

    def encoded(self, X: np.ndarray) -> Any:
        """What the classifier reads: the float matrix itself, or (models fitted on frames) a frame."""
        return X if self.matrix else model_frame(X, self.spec)

    @property
    def regression(self) -> bool:
        return self.spec.get("task") == "regression"

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        """The class probabilities of encoded rows (a regression's predicted values)."""
        if self.regression:
            return predicted_values(self.proba, self.encoded(X), self.spec)
        return class_probabilities(self.proba, self.encoded(X), self.spec)


def load_served(model_uri: str, tracking_uri: str, folder: Path) -> ServedModel:
    """The model behind ``model_uri`` (an alias: the version it names now), checked and loaded."""
    info = resolve_model(model_uri, tracking_uri)
    model = load_model(info["uri"], Path(tempfile.mkdtemp(dir=folder)), tracking_uri)
    inner = model.unwrap_python_model()
    spec = inner.spec_
    return ServedModel(requested=model_uri, uri=info["uri"], name=info["name"], version=info["version"],
                       run_id=info.get("run_id", ""), spec=spec, proba=inner.proba_,
                       explainer=getattr(inner, "explainer_", None), matrix=getattr(inner.proba_, "matrix", False))


class Follower:
    """The model now served, and the task that follows its alias."""

    def __init__(self, model: ServedModel, tracking_uri: str, folder: Path, refresh_s: float,
                 on_swap: Callable[[ServedModel, ServedModel], None], on_error: Callable[[str], None]) -> None:
        self.current = model
        self.tracking_uri, self.folder, self.refresh_s = tracking_uri, folder, refresh_s
        self.on_swap, self.on_error = on_swap, on_error
        self._task: asyncio.Task | None = None

    @property
    def follows(self) -> bool:
        """Whether the requested URI names an alias (a version or a logged model never changes)."""
        return "@" in self.current.requested and self.refresh_s > 0

    def start(self) -> None:
        if self.follows:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def check(self) -> bool:
        """Look the alias up once; load and swap to its version if it moved. True if it swapped."""
        info = await asyncio.to_thread(resolve_model, self.current.requested, self.tracking_uri)
        if info["version"] == self.current.version:
            return False
        new = await asyncio.to_thread(load_served, self.current.requested, self.tracking_uri, self.folder)
        if new.version == self.current.version:
            return False
        old, self.current = self.current, new  # one assignment: the next request answers with the new one
        self.on_swap(old, new)
        log.info("model %s now serves version %s (was %s)", new.requested, new.version, old.version)
        return True

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the served model stays; the failure is counted and said
                self.on_error(type(exc).__name__)
                log.warning("model %s: could not follow its alias (%s); still serving version %s",
                            self.current.requested, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                            self.current.version)


class Batcher:
    """Class probabilities of the requests that wait together, in one call of the model per model.

    A request's rows join the pending batch; the batch runs once the event loop has taken every
    request that was ready (``wait_ms`` 0), or ``wait_ms`` later, or as soon as it holds
    ``max_rows`` rows. It runs on the event loop's thread: a request's model call is shorter than
    a hand-off to a thread would be.
    """

    def __init__(self, wait_ms: float, max_rows: int, on_batch: Callable[[int], None]) -> None:
        self.wait_s, self.max_rows, self.on_batch = wait_ms / 1000.0, max_rows, on_batch
        self._pending: list[tuple[ServedModel, np.ndarray, asyncio.Future]] = []
        self._rows = 0
        self._handle: asyncio.Handle | asyncio.TimerHandle | None = None

    def submit(self, model: ServedModel, X: np.ndarray) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((model, X, future))
        self._rows += len(X)
        if self._rows >= self.max_rows:
            self.run()
        elif self._handle is None:
            self._handle = loop.call_later(self.wait_s, self.run) if self.wait_s else loop.call_soon(self.run)
        return future

    def run(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        pending, self._pending, self._rows = self._pending, [], 0
        by_model: dict[int, list[tuple[ServedModel, np.ndarray, asyncio.Future]]] = {}
        for item in pending:
            by_model.setdefault(id(item[0]), []).append(item)
        for items in by_model.values():
            model = items[0][0]
            try:
                X = items[0][1] if len(items) == 1 else np.vstack([x for _, x, _ in items])
                proba = model.probabilities(X)
            except Exception as exc:  # noqa: BLE001 - every request of the batch is told
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.on_batch(len(X))
            start = 0
            for _, x, future in items:
                if not future.done():
                    future.set_result(proba[start:start + len(x)])
                start += len(x)
