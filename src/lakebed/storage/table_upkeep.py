"""A table's upkeep: restoring an earlier version, compacting or Z-ordering its files,
and vacuuming those no version needs any more."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from deltalake.exceptions import DeltaError

from lakebed.errors import StorageError, VersionNotFoundError
from lakebed.storage.naming import TableName
from lakebed.storage.table_support import WRITER_PROPERTIES

if TYPE_CHECKING:
    from typing import Any

    from deltalake import DeltaTable

    from lakebed.storage.table import AsOf, WriteResult


class Upkeep:
    """The maintenance operations of a `Table` (its name, handle, version lookup, error
    translation and commit report)."""

    name: TableName

    def delta(self, *, refresh: bool = True) -> DeltaTable:
        raise NotImplementedError

    def _version_of(self, as_of: AsOf) -> int:
        raise NotImplementedError

    def _errors(self, operation: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _latest(self, operation: str, metrics: dict[str, Any] | None = None) -> WriteResult:
        raise NotImplementedError

    def restore(self, target: AsOf) -> WriteResult:
        """Make an earlier version the latest one (a new commit; history is kept)."""
        as_of = self._version_of(target)
        dt = self.delta()
        if as_of == dt.version():
            # Already there: nothing to commit (delta-rs refuses a restore to itself).
            from lakebed.storage.table import WriteResult  # table.py imports this module

            return WriteResult(str(self.name), as_of, "RESTORE", {"noop": True})
        if not 0 <= as_of <= dt.version():
            raise VersionNotFoundError(
                f"{self.name} has versions 0..{dt.version()}, not {as_of}",
                table=str(self.name),
                hint=f"`lakebed history {self.name}` lists its versions",
            )
        with self._errors("restore"):
            metrics = dt.restore(as_of)
        return self._latest("RESTORE", {**metrics, "restored_version": as_of})

    def optimize(
        self, *, zorder_by: list[str] | None = None, target_size: int | None = None
    ) -> WriteResult:
        """Compact small files, or cluster them by Z-order over `zorder_by` columns."""
        dt = self.delta()
        with self._errors("optimize"):
            if zorder_by:
                metrics = dt.optimize.z_order(
                    zorder_by, target_size=target_size, writer_properties=WRITER_PROPERTIES
                )
            else:
                metrics = dt.optimize.compact(
                    target_size=target_size, writer_properties=WRITER_PROPERTIES
                )
        return self._latest("OPTIMIZE", metrics)

    def vacuum(
        self,
        *,
        retain_hours: int | None = None,
        dry_run: bool = False,
        enforce_retention: bool = True,
    ) -> list[str]:
        """Delete files no longer referenced by versions newer than the retention window."""
        dt = self.delta()
        try:
            files = dt.vacuum(
                retention_hours=retain_hours,
                dry_run=dry_run,
                enforce_retention_duration=enforce_retention,
            )
        except DeltaError as exc:
            if "retention" not in str(exc).lower():
                raise StorageError(f"vacuum of {self.name} failed: {exc}") from exc
            raise StorageError(
                f"vacuum of {self.name}: retention of {retain_hours} hours is below the "
                "table's minimum (168 hours by default)",
                table=str(self.name),
                hint="time travel needs the files: keep retain_hours >= 168, or pass "
                "enforce_retention=False (--force) to go below it",
            ) from exc
        return [str(f) for f in files]
