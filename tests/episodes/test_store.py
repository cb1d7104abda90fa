"""The episode store: list, filter, load, and report damaged files."""

import copy

import pytest

from srpo.episodes import CorruptEpisodeError, EpisodeStore
from srpo.episodes.schema import EpisodeMeta


def _variant(ep, **changes):
    e = copy.deepcopy(ep)
    d = e.meta.to_dict()
    d.update(changes)
    d.pop("episode_id")
    e.meta = EpisodeMeta.from_dict(d)
    return e


@pytest.fixture
def store(tmp_path, expert_ep):
    s = EpisodeStore(tmp_path / "store")
    s.write(expert_ep)
    s.write(_variant(expert_ep, split="heldout", success=False))
    s.write(_variant(expert_ep, task="open_drawer", source="robot", split="none"))
    return s


def test_list_and_filters(store):
    assert len(store.list()) == 3
    assert len(store.list(task="place_red_cube_in_tray")) == 2
    assert len(store.list(split="heldout")) == 1
    assert len(store.list(success=False)) == 1
    assert [r.meta.task for r in store.list(source="robot")] == ["open_drawer"]
    assert store.list(task="place_red_cube_in_tray", success=True, split="train")[0].meta.split == "train"
    assert store.list(task="nope") == []


def test_load_gives_back_the_episode(store, expert_ep):
    rec = store.list(task="place_red_cube_in_tray", split="train")[0]
    ep = store.load(rec)
    assert ep.meta == rec.meta and ep.length == expert_ep.length
    assert len(list(store.iter_episodes(success=True))) == 2


def test_damaged_file_is_reported_not_loaded(store):
    victim = store.list(source="robot")[0].path
    victim.write_bytes(victim.read_bytes()[:-100])
    records = store.list()
    assert len(records) == 2
    assert [p for p, _ in store.problems] == [victim]
    with pytest.raises(CorruptEpisodeError, match=str(victim)):
        store.list(strict=True)
    with pytest.raises(CorruptEpisodeError, match=str(victim)):
        store.load(victim)
    assert [p for p, _ in store.verify()] == [victim]


def test_temp_files_of_unfinished_writes_are_ignored(store):
    (store.root / "open_drawer" / ".x.mcap.tmp-1").write_bytes(b"partial")
    (store.root / "open_drawer" / ".hidden.mcap").write_bytes(b"partial")
    assert len(store.list()) == 3 and store.problems == []


def test_empty_or_missing_root(tmp_path):
    assert EpisodeStore(tmp_path / "nothing").list() == []
