"""The host's cores divided among the council processes generating, across real
processes sharing a folder."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import generating_elsewhere

from council.agents.runtimes.cores import HostCores


def test_a_process_alone_has_every_core_and_shares_them_with_one_generating(
    tmp_path: Path,
) -> None:
    cores = HostCores(tmp_path, 4, refresh_s=0)
    with cores.generating():
        assert cores.share() == 4
        with generating_elsewhere(tmp_path) as other:
            assert cores.share() == 2
            other.kill()
            other.wait()
            assert cores.share() == 4  # the kernel dropped a dead process's hold
        assert [p.name.split("-")[0] for p in tmp_path.iterdir()] == [str(os.getpid())]
    cores.close()
    assert not list(tmp_path.iterdir())


def test_a_process_that_stopped_generating_holds_no_cores(tmp_path: Path) -> None:
    """Two runtimes of one process count as two; one that released counts as none,
    and a count is trusted for ``refresh_s``."""
    mine, idle = HostCores(tmp_path, 2, refresh_s=0), HostCores(tmp_path, 2)
    with idle.generating():
        assert mine.share() == 1
    assert mine.share() == 2
    slow = HostCores(tmp_path, 2, refresh_s=60)
    assert slow.share() == 2
    with idle.generating():
        assert slow.share() == 2  # counted a moment ago: not looked at again yet
        with slow.generating():  # a new generation of its own looks again
            assert slow.share() == 1


def test_without_a_shared_folder_a_process_has_every_core() -> None:
    cores = HostCores(None, 3)
    with cores.generating():
        assert cores.share() == 3
