"""A folder of episode files that can be listed, filtered and loaded.

Layout: ``ROOT/<task>/<episode_id>.mcap``. Listing reads only each file's metadata (from the MCAP summary);
loading verifies the whole file. A damaged file never loads silently: ``load`` raises ``CorruptEpisodeError``
naming it, and ``list`` reports it through ``problems`` (and raises with ``strict=True``).

>>> store = EpisodeStore("demos")                                      # doctest: +SKIP
>>> [r.meta.success for r in store.list(task="open_drawer", split="train")]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from srpo.episodes.mcap_io import CorruptEpisodeError, read_episode, read_meta, write_episode
from srpo.episodes.schema import Episode, EpisodeMeta

log = logging.getLogger(__name__)
SUFFIX = ".mcap"


@dataclass(frozen=True)
class EpisodeRecord:
    """An episode on disk: its path and its metadata."""

    path: Path
    meta: EpisodeMeta


class EpisodeStore:
    """Episodes under one root folder."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.problems: list[tuple[Path, str]] = []
        self._cache: dict[Path, tuple[float, int, EpisodeMeta]] = {}

    def path_for(self, meta: EpisodeMeta) -> Path:
        return self.root / meta.task / f"{meta.episode_id}{SUFFIX}"

    def write(self, episode: Episode) -> Path:
        return write_episode(self.path_for(episode.meta), episode)

    def files(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.rglob(f"*{SUFFIX}") if not p.name.startswith("."))

    def list(
        self,
        task: str | None = None,
        split: str | None = None,
        success: bool | None = None,
        source: str | None = None,
        suite: str | None = None,
        strict: bool = False,
        labelled: bool | None = None,
    ) -> list[EpisodeRecord]:
        """Episodes matching every given filter, ordered by task then creation time. ``success`` True/False selects
        labelled episodes with that outcome; ``labelled`` False selects the episodes whose outcome is unknown."""
        self.problems = []
        out = []
        for path in self.files():
            try:
                meta = self._meta(path)
            except CorruptEpisodeError as exc:
                if strict:
                    raise
                log.warning("skipping damaged episode: %s", exc)
                self.problems.append((path, str(exc)))
                continue
            if task is not None and meta.task != task:
                continue
            if split is not None and meta.split != split:
                continue
            if success is not None and meta.success != success:
                continue
            if labelled is not None and meta.labelled != labelled:
                continue
            if source is not None and meta.source != source:
                continue
            if suite is not None and meta.suite != suite:
                continue
            out.append(EpisodeRecord(path, meta))
        out.sort(key=lambda r: (r.meta.task, r.meta.created_unix, r.path.name))
        return out

    def _meta(self, path: Path) -> EpisodeMeta:
        st = path.stat()
        cached = self._cache.get(path)
        if cached and cached[:2] == (st.st_mtime, st.st_size):
            return cached[2]
        meta = read_meta(path)
        self._cache[path] = (st.st_mtime, st.st_size, meta)
        return meta

    def load(self, item: EpisodeRecord | str | os.PathLike) -> Episode:
        return read_episode(item.path if isinstance(item, EpisodeRecord) else item)

    def iter_episodes(self, **filters) -> Iterator[Episode]:
        for record in self.list(**filters):
            yield self.load(record)

    def verify(self) -> list[tuple[Path, str]]:
        """Fully read every file; return (path, problem) for each damaged one."""
        bad = []
        for path in self.files():
            try:
                read_episode(path)
            except CorruptEpisodeError as exc:
                bad.append((path, str(exc)))
        return bad
