"""Per-job record counts and their arithmetic."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Counts:
    processed: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: int = 0  # refused before it reached its owner (a bad CSV row)
    failed: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def not_written(self) -> int:
        return self.skipped + self.failed

    def to_dict(self) -> dict[str, int]:
        # A copy of the fields (in declaration order): dataclasses.asdict deep-copies field by
        # field, and this is called several times per batch.
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counts:
        return cls(**{f.name: int(data.get(f.name, 0)) for f in fields(cls)})


def progress(processed: int, total: int | None) -> int:
    """Whole percent done, 0-100; 0 while the total is unknown."""
    if not total:
        return 0
    return min(100, processed * 100 // total)
