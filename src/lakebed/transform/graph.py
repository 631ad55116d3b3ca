"""The dependency graph of a project's models: build order, parallel layers and selectors.

Roots are source tables: tables that already exist in the catalog and the targets of the
ingestion sources in `lakebed.yml`. Every model input must be a model or a source table.

Selectors, as dbt writes them (several separated by spaces select their union; joined
by commas, their intersection):

    name | layer.name      one model (a bare name must be unique across layers)
    gold.* | *orders       models whose name matches the pattern (`*`, `?`, `[...]`)
    +name                  the model and everything upstream of it
    name+                  the model and everything downstream of it
    2+name | name+1        ...only that many steps up or down
    +name+                 both
    @name                  the model, everything downstream, and everything those read
    tag:x                  models tagged x
    layer:gold             models of a layer
    materialized:view      models of a materialization
    source:x               models downstream of the table ingestion source x writes
    state:modified         models new or changed since their last build (SQL, code or
                           settings), as `lakebed plan` finds them; state:new, never built
    result:failed          models that failed in the last run (result:skipped: not built
                           because an input failed; result:success)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import heapq
import re
from collections.abc import Callable, Iterable, Mapping
from difflib import SequenceMatcher
from typing import Literal, NoReturn

from lakebed.errors import CycleError, InvalidTableNameError, ModelError, TransformError
from lakebed.storage import CHANGE_FEED, TableName
from lakebed.transform.definition import Model
from lakebed.transform.discover import MODEL_LAYERS

SELECTOR_METHODS = ("tag", "layer", "materialized", "source", "state", "result")
_RESULTS = ("failed", "skipped", "success")
BuildState = Literal["new", "modified", "unchanged"]
# [@][N+]body[+N]: the graph operators around a selector's body.
_OPERATORS = re.compile(r"(?P<at>@)?(?:(?P<up>\d*)\+)?(?P<body>.*?)(?:\+(?P<down>\d*))?")


class ModelGraph:
    """Models and the tables they read; raises `ModelError` / `CycleError` when built from
    models whose inputs are unknown or that depend on each other in a cycle."""

    def __init__(
        self,
        models: Mapping[TableName, Model],
        sources: Iterable[TableName] = (),
        *,
        source_targets: Mapping[str, TableName] | None = None,
        pipeline_targets: Mapping[str, TableName] | None = None,
        state: Callable[[Model], BuildState] | None = None,
        results: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        """`sources`: tables that exist in the catalog; `source_targets` and
        `pipeline_targets`: each ingestion source's or stream pipeline's name and the table
        it writes (also a root of the graph); `state`: how a model stands against its last
        build (for `state:` selectors); `results`: how each model ended in the last run
        (for `result:`). Models with `enabled: false` are left out (and what reads them is
        an error)."""
        self._state = state
        self._results = results
        self.models: dict[TableName, Model] = {}
        self.disabled: dict[TableName, Model] = {}
        for name, model in sorted(models.items()):
            if model.name != name:
                raise TransformError(f"model {model.name} is registered under {name}")
            (self.models if model.config.enabled else self.disabled)[name] = model
        self.source_targets: dict[str, TableName] = dict(sorted((source_targets or {}).items()))
        self.pipeline_targets = dict(sorted((pipeline_targets or {}).items()))
        written = {*sources, *self.source_targets.values(), *self.pipeline_targets.values()}
        self.sources: frozenset[TableName] = frozenset(
            written - set(self.models) - set(self.disabled)
        )
        self._downstream: dict[TableName, list[TableName]] = {}
        for name, model in self.models.items():
            for table in model.inputs:
                self._downstream.setdefault(table, []).append(name)
        self._mark_feeds()
        self._check()
        self._order = self._topological(set(self.models))
        self._position = {name: index for index, name in enumerate(self._order)}

    def _mark_feeds(self) -> None:
        """Which models' tables record a change data feed: those an incremental model reads
        (see `Model.read_incrementally`, `Model.feed_inputs`)."""
        for name, model in list(self.models.items()):
            readers = (self.models[d] for d in self._downstream.get(name, ()))
            if any(r.config.materialized == "incremental" for r in readers):
                model = dataclasses.replace(model, read_incrementally=True)
            if model.config.materialized == "incremental":
                # Tables no model builds (ingested, streamed, written) too: a source merged
                # or reloaded reaches the model as changes, not as a rebuild at every run.
                feeds = (
                    i
                    for i in model.inputs
                    if i not in self.models or CHANGE_FEED not in self.models[i].config.properties
                )
                model = dataclasses.replace(model, feed_inputs=tuple(feeds))
            self.models[name] = model

    # -- validation -----------------------------------------------------------------------

    def _check(self) -> None:
        written_by = {t: ("ingestion source", s) for s, t in self.source_targets.items()}
        written_by |= {t: ("stream pipeline", p) for p, t in self.pipeline_targets.items()}
        for name, model in self.models.items():
            if name in written_by:
                kind, writer = written_by[name]
                raise ModelError(
                    f"{name} is both a model and the target of {kind} {writer!r}",
                    file=str(model.path),
                    model=str(name),
                    hint=f"rename the model, or point the {kind.split()[-1]} at another table",
                )
        known = sorted(str(t) for t in set(self.models) | self.sources)
        for name, model in self.models.items():
            for table in model.inputs:
                if table in self.models or table in self.sources:
                    continue
                if table in self.disabled:
                    raise ModelError(
                        f"{name} reads {table}, a disabled model "
                        f"(enabled: false in {self.disabled[table].path.with_suffix('.yml')})",
                        file=str(model.path),
                        line=model.input_lines.get(table),
                        model=str(name),
                        hint=f"enable {table} again, or disable {name} too",
                    )
                matches = close_matches(str(table), known)
                raise ModelError(
                    f"{name} reads {table}, which is neither a model nor a source table",
                    file=str(model.path),
                    line=model.input_lines.get(table),
                    model=str(name),
                    hint=f"did you mean {', '.join(matches)}?"
                    if matches
                    else "add a model or an ingestion source for it, or fix the name",
                )

    def _raise_cycle(self, remaining: set[TableName]) -> NoReturn:
        """Every model left after a topological sort has an input left too: walking inputs
        from the smallest one must come back to a model already seen."""
        path = [min(remaining)]
        while True:
            current = path[-1]
            upstream = min(t for t in self.models[current].inputs if t in remaining)
            if upstream in path:
                loop = path[path.index(upstream) :]
                break
            path.append(upstream)
        # `loop` follows inputs (reader → read); print it the way data flows, from the smallest.
        flow = list(reversed(loop))
        start = flow.index(min(flow))
        flow = flow[start:] + flow[:start]
        first, reads = flow[0], flow[-1]
        model = self.models[first]
        raise CycleError(
            [str(t) for t in [*flow, first]],
            file=str(model.path),
            line=model.input_lines.get(reads),
        )

    # -- order ----------------------------------------------------------------------------

    def _topological(self, among: set[TableName]) -> list[TableName]:
        """Kahn's algorithm over `among`; ties are broken by name so the order is stable.
        Models left over depend on each other in a cycle: a CycleError."""
        waiting = {name: {t for t in self.models[name].inputs if t in among} for name in among}
        ready = [name for name, inputs in waiting.items() if not inputs]
        heapq.heapify(ready)
        order: list[TableName] = []
        while ready:
            name = heapq.heappop(ready)
            order.append(name)
            for reader in self._downstream.get(name, []):
                if reader in waiting and name in waiting[reader]:
                    waiting[reader].discard(name)
                    if not waiting[reader]:
                        heapq.heappush(ready, reader)
        if len(order) < len(among):
            self._raise_cycle(among - set(order))
        return order

    def order(self, among: Iterable[TableName | str] | None = None) -> list[TableName]:
        """Models in build order (inputs first, ties by name); only `among` if given."""
        if among is None:
            return list(self._order)
        return self._sorted(self._models_of(among))

    def layers(self, among: Iterable[TableName | str] | None = None) -> list[list[TableName]]:
        """Models grouped into steps: each step's models read only earlier steps' tables, so
        they can build in parallel. With `among`, inputs outside it count as built."""
        selected = set(self._order) if among is None else self._models_of(among)
        level: dict[TableName, int] = {}
        for name in self._sorted(selected):
            inputs = [level[t] for t in self.models[name].inputs if t in selected]
            level[name] = 1 + max(inputs) if inputs else 0
        steps: list[list[TableName]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
        for name in sorted(level):
            steps[level[name]].append(name)
        return steps

    def upstream(
        self, name: TableName | str, *, transitive: bool = True, depth: int | None = None
    ) -> list[TableName]:
        """The models `name` reads (all the way up unless `transitive=False`, or `depth`
        steps), in build order."""
        return self._reach(name, self._inputs, 1 if not transitive else depth)

    def downstream(
        self, name: TableName | str, *, transitive: bool = True, depth: int | None = None
    ) -> list[TableName]:
        """The models that read `name` (all the way down unless `transitive=False`, or
        `depth` steps), in build order; `name` may be a model or a source table."""
        return self._reach(
            name, lambda n: self._downstream.get(n, []), 1 if not transitive else depth
        )

    def _inputs(self, name: TableName) -> list[TableName]:
        model = self.models.get(name)
        return [t for t in model.inputs if t in self.models] if model is not None else []

    def _reach(
        self,
        name: TableName | str,
        step: Callable[[TableName], Iterable[TableName]],
        depth: int | None,
    ) -> list[TableName]:
        found: set[TableName] = set()
        frontier = [self._node(name)]
        steps = 0
        while frontier and (depth is None or steps < depth):
            steps += 1
            frontier = [n for current in frontier for n in step(current) if n not in found]
            found.update(frontier)
        return self._sorted(found)

    def _sorted(self, names: Iterable[TableName]) -> list[TableName]:
        return sorted(names, key=self._position.__getitem__)

    def _models_of(self, among: Iterable[TableName | str]) -> set[TableName]:
        return {node for node in map(self._node, among) if node in self.models}

    def _node(self, name: TableName | str) -> TableName:
        """A model or source table by `layer.name`, or a TransformError with close matches."""
        try:
            table = TableName.parse(name)
        except InvalidTableNameError as exc:
            raise TransformError(exc.message, hint=exc.hint) from exc
        if table in self.models or table in self.sources:
            return table
        if table in self.disabled:
            raise TransformError(
                f"{table} is disabled (enabled: false in its settings)",
                hint="set enabled: true (or remove the setting) to build it",
            )
        raise self._unknown(f"{table} is neither a model nor a source table", str(table))

    # -- selectors ------------------------------------------------------------------------

    def select(self, expression: str) -> list[TableName]:
        """The models a selector expression picks, in build order (see the module docstring)."""
        selectors = expression.split()
        if not selectors:
            raise TransformError(
                "empty selector", hint="for example `gold.revenue`, `+gold.revenue`, `tag:daily`"
            )
        chosen: set[TableName] = set()
        for selector in selectors:
            parts = [self._select_one(part, selector) for part in selector.split(",")]
            chosen |= set.intersection(*parts)
        return self._sorted(chosen)

    def _select_one(self, selector: str, whole: str) -> set[TableName]:
        match = _OPERATORS.fullmatch(selector)
        assert match is not None  # every text matches: the body takes what is left
        body, at = match["body"], bool(match["at"])
        up = self._depth(match["up"], whole)
        down = self._depth(match["down"], whole)
        if not body:
            raise TransformError(f"selector {whole!r} names nothing", hint=_SELECTOR_HINT)
        if at and up != 0:
            raise TransformError(
                f"selector {whole!r} puts @ and + before a name",
                hint="@name already takes everything upstream of what is downstream of it",
            )
        if ":" in body:
            seeds = self._by_method(whole, *body.split(":", 1))
        elif any(c in body for c in "*?["):
            seeds = self._by_pattern(body)
        else:
            seeds = {self._by_name(body)}
            if not (seeds & set(self.models)) and down == 0 and not at:
                raise TransformError(
                    f"{body} is a source table, not a model",
                    hint=f"select the models that read it with `{body}+`",
                )
        chosen = seeds & set(self.models)
        for seed in seeds:
            if up != 0:
                chosen.update(self.upstream(seed, depth=up))
            if down != 0 or at:
                chosen.update(self.downstream(seed, depth=None if at else down))
        if at:
            for model in list(chosen):
                chosen.update(self.upstream(model))
        return chosen

    @staticmethod
    def _depth(text: str | None, selector: str) -> int | None:
        """A graph operator's depth: 0 for no operator, None for all the way."""
        if text is None:
            return 0
        if text == "":
            return None
        if int(text) < 1:
            raise TransformError(
                f"selector {selector!r} goes {text} steps", hint="write 1+name or more, or +name"
            )
        return int(text)

    def _by_pattern(self, pattern: str) -> set[TableName]:
        """Models whose `layer.name` (or bare name, for a pattern without a dot) match."""
        found = {
            name
            for name in self.models
            if fnmatch.fnmatchcase(str(name) if "." in pattern else name.name, pattern.lower())
        }
        if not found:
            raise self._unknown(f"no model matches {pattern!r}", pattern)
        return found

    def _by_method(self, selector: str, method: str, value: str) -> set[TableName]:
        if method == "tag":
            tags = {tag for model in self.models.values() for tag in model.config.tags}
            if value not in tags:
                raise self._unknown(f"no model has tag {value!r}", value, sorted(tags), "tag:")
            return {name for name, model in self.models.items() if value in model.config.tags}
        if method == "layer":
            if value not in MODEL_LAYERS:
                raise self._unknown(f"unknown layer {value!r}", value, list(MODEL_LAYERS), "layer:")
            return {name for name in self.models if name.layer == value}
        if method == "materialized":
            kinds = {model.config.materialized for model in self.models.values()}
            if value not in kinds:
                raise self._unknown(
                    f"no model is materialized as {value!r}", value, sorted(kinds), "materialized:"
                )
            return {n for n, m in self.models.items() if m.config.materialized == value}
        if method == "source":
            target = self.source_targets.get(value)
            if target is None:
                raise self._unknown(
                    f"unknown ingestion source {value!r}",
                    value,
                    list(self.source_targets),
                    "source:",
                )
            return set(self.downstream(target))
        if method == "state":
            if value not in ("new", "modified"):
                raise self._unknown(
                    f"unknown state {value!r}", value, ["new", "modified"], "state:"
                )
            if self._state is None:
                raise TransformError(f"{selector!r} needs the lakehouse the models are built in")
            wanted = ("new",) if value == "new" else ("new", "modified")
            return {n for n, m in self.models.items() if self._state(m) in wanted}
        if method == "result":
            if value not in _RESULTS:
                raise self._unknown(f"unknown result {value!r}", value, list(_RESULTS), "result:")
            if self._results is None:
                raise TransformError(f"{selector!r} needs the lakehouse the models ran in")
            ended = self._results()
            return {n for n in self.models if ended.get(str(n)) == value}
        raise TransformError(
            f"unknown selector method {method!r} in {selector!r}",
            hint=f"methods are {', '.join(m + ':' for m in SELECTOR_METHODS)}; {_SELECTOR_HINT}",
        )

    def _by_name(self, text: str) -> TableName:
        if "." in text:
            return self._node(text)
        for pool in (self.models, sorted(self.sources), self.disabled):
            candidates = [name for name in pool if name.name == text.lower()]
            if len(candidates) > 1:
                raise TransformError(
                    f"{text} is ambiguous: {', '.join(map(str, candidates))}",
                    hint="write it as layer.name",
                )
            if candidates:
                return self._node(candidates[0])  # a disabled model says so
        raise self._unknown(f"no model or source table is called {text}", text)

    def _unknown(
        self, message: str, text: str, known: list[str] | None = None, prefix: str = ""
    ) -> TransformError:
        if known is None:
            tables = set(self.models) | self.sources
            known = sorted({str(t) if "." in text else t.name for t in tables})
        matches = close_matches(text, known)
        if matches:
            hint = f"did you mean {', '.join(prefix + m for m in matches)}?"
        elif known and prefix:
            hint = f"known: {', '.join(prefix + k for k in known[:10])}"
        else:
            hint = _SELECTOR_HINT
        return TransformError(message, hint=hint)


def close_matches(text: str, known: Iterable[str]) -> list[str]:
    """Up to three known names close to `text`, only those nearly as close as the best one
    (so `silver.order` suggests silver.orders, not every other silver table)."""
    scored = sorted(
        ((SequenceMatcher(None, text, name).ratio(), name) for name in set(known)),
        key=lambda item: (-item[0], item[1]),
    )
    if not scored or scored[0][0] < 0.6:
        return []
    floor = max(0.6, scored[0][0] - 0.1)
    return [name for ratio, name in scored[:3] if ratio >= floor]


_SELECTOR_HINT = (
    "selectors are name, layer.name, gold.*, +name (with upstream), name+ (with "
    "downstream), 2+name, @name, tag:x, layer:x, materialized:x, source:x, "
    "state:modified and result:failed; separated by "
    "spaces for their union, by commas for their intersection"
)
