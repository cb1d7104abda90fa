"""The one episode format (MCAP + ROS 2 messages) and the store that lists, filters and loads episodes."""

from srpo.episodes.builder import EpisodeBuilder
from srpo.episodes.mcap_io import (
    CorruptEpisodeError,
    EpisodeWriter,
    label_episode,
    read_episode,
    read_meta,
    write_episode,
)
from srpo.episodes.schema import SCHEMA_VERSION, Episode, EpisodeMeta, EpisodeSchemaError
from srpo.episodes.store import EpisodeRecord, EpisodeStore

__all__ = [
    "SCHEMA_VERSION",
    "CorruptEpisodeError",
    "Episode",
    "EpisodeBuilder",
    "EpisodeMeta",
    "EpisodeRecord",
    "EpisodeSchemaError",
    "EpisodeStore",
    "EpisodeWriter",
    "label_episode",
    "read_episode",
    "read_meta",
    "write_episode",
]
