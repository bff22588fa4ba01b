"""The editing tools' spare files (tools/spares.py): a commit writes into the files earlier
commits swapped out instead of creating and deleting files, and trusts nothing it finds in the
pool."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import tools.spares
from tests.tools.harness import Harness, envelope, hidden_leftovers, open_harness
from tools.base import ToolSettings
from tools.spares import SPARE_DIR, SparePool, creating_files_is_slow
from tools.textfile import FileWrite, commit_writes
from tools.workspace import AGENTD_DIR, AGENTD_GITIGNORE, ignore_in_git

# A pool whatever the filesystem of the test's workspace (by default a toolbox keeps one only
# where creating files is slow, see the last tests).
ALWAYS = ToolSettings(spare_files=True)


@pytest.fixture
async def harness(workspace: Path) -> AsyncIterator[Harness]:
    async with open_harness(workspace, enabled=["apply_patch"], settings=ALWAYS) as h:
        yield h


def replace_line(path: str, old: str, new: str) -> list[str]:
    return [f"*** Update File: {path}", "@@", f"-{old}", f"+{new}"]


def spares_of(root: Path) -> dict[str, os.stat_result]:
    return {path.name: path.lstat() for path in (root / AGENTD_DIR / SPARE_DIR).iterdir()}


async def test_a_commit_writes_into_the_files_an_earlier_commit_swapped_out(
    harness: Harness,
) -> None:
    harness.write({"a.txt": "one\n", "tool.sh": "echo one\n", "gone.txt": "bye\n"})
    (harness.root / "tool.sh").chmod(0o755)
    plain_mode = stat.S_IMODE((harness.root / "a.txt").stat().st_mode)
    patch = envelope(
        *replace_line("a.txt", "one", "two"),
        *replace_line("tool.sh", "echo one", "echo two"),
        "*** Delete File: gone.txt",
    )
    assert not (await harness.call("apply_patch", input=patch)).is_error
    spares = spares_of(harness.root)
    # the two old files and the deleted one, kept emptied (no old contents in the pool)
    assert len(spares) == 3 and all(info.st_size == 0 for info in spares.values())
    assert (harness.root / AGENTD_DIR / ".gitignore").read_text().splitlines()[-1] == "*"
    spare_inodes = {info.st_ino for info in spares.values()}

    patch = envelope(
        *replace_line("a.txt", "two", "three"),
        *replace_line("tool.sh", "echo two", "echo three"),
        "*** Add File: new.txt",
        "+new",
    )
    assert not (await harness.call("apply_patch", input=patch)).is_error
    assert harness.tree() == {"a.txt": b"three\n", "new.txt": b"new\n", "tool.sh": b"echo three\n"}
    written = {harness.root / name for name in ("a.txt", "tool.sh", "new.txt")}
    assert {path.stat().st_ino for path in written} == spare_inodes  # no file was created
    assert stat.S_IMODE((harness.root / "tool.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((harness.root / "a.txt").stat().st_mode) == plain_mode
    pool = harness.box.peek_service(SparePool.for_toolbox)
    assert pool is not None and (pool.taken, pool.kept) == (3, 5)
    assert len(spares_of(harness.root)) == 2  # the two files the second commit replaced
    assert hidden_leftovers(harness.root) == []


async def test_without_spare_files_the_workspace_gets_no_pool(workspace: Path) -> None:
    async with open_harness(
        workspace, enabled=["apply_patch"], settings=ToolSettings(spare_files=False)
    ) as harness:
        harness.write({"a.txt": "one\n"})
        assert not (
            await harness.call("apply_patch", input=envelope(*replace_line("a.txt", "one", "2")))
        ).is_error
        assert harness.tree() == {"a.txt": b"2\n"}
        assert not (harness.root / AGENTD_DIR).exists()


async def test_nothing_found_in_the_pool_is_written_but_an_empty_file_of_its_own(
    harness: Harness, tmp_path: Path
) -> None:
    """The agent's commands can put anything in `.agentd/spare`: a link to a file elsewhere,
    a second name of another file, a FIFO, a directory, a file with contents. A commit must
    change nothing but its own files."""
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    harness.write({"a.txt": "one\n", "b.txt": "b\n", "c.txt": "c\n", "d.txt": "d\n"})
    pool_dir = harness.root / AGENTD_DIR / SPARE_DIR
    pool_dir.mkdir(parents=True)
    (pool_dir / "symlink").symlink_to(outside)
    os.link(harness.root / "b.txt", pool_dir / "hardlink")
    os.mkfifo(pool_dir / "fifo")
    (pool_dir / "directory").mkdir()
    (pool_dir / "full").write_text("somebody's words\n" * 100)
    patch = envelope(
        *[
            line
            for name in ("a", "b", "c", "d")
            for line in replace_line(f"{name}.txt", "one" if name == "a" else name, name * 3)
        ]
    )
    result = await harness.call("apply_patch", input=patch)
    assert not result.is_error, result.output
    assert harness.tree() == {
        "a.txt": b"aaa\n",
        "b.txt": b"bbb\n",
        "c.txt": b"ccc\n",
        "d.txt": b"ddd\n",
    }
    assert outside.read_text() == "outside\n"
    assert (pool_dir / "directory").is_dir()  # a directory cannot be moved over a file
    assert hidden_leftovers(harness.root) == []
    # the regular file of this user with no other name was emptied and written into; the
    # rest was left where it was, and what the commit kept is empty
    pool = harness.box.peek_service(SparePool.for_toolbox)
    assert pool is not None and pool.taken == 1
    planted = {"symlink", "hardlink", "fifo", "directory"}
    assert planted <= {path.name for path in pool_dir.iterdir()}
    kept = [path for path in pool_dir.iterdir() if path.name not in planted]
    assert len(kept) == 3 and all(path.stat().st_size == 0 for path in kept)
    assert (pool_dir / "hardlink").read_text() == "b\n"  # the old b.txt: still that name's


async def test_a_pool_directory_that_is_a_link_is_not_used(
    harness: Harness, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "victim").write_text("keep\n")
    (harness.root / AGENTD_DIR).mkdir()
    (harness.root / AGENTD_DIR / SPARE_DIR).symlink_to(elsewhere)
    harness.write({"a.txt": "one\n"})
    assert not (
        await harness.call("apply_patch", input=envelope(*replace_line("a.txt", "one", "two")))
    ).is_error
    assert harness.tree() == {"a.txt": b"two\n"}
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim"]
    assert (elsewhere / "victim").read_text() == "keep\n"


def test_pools_sharing_a_directory_never_hand_out_one_spare_twice(tmp_path: Path) -> None:
    pool_dir = tmp_path / AGENTD_DIR / SPARE_DIR
    pool_dir.mkdir(parents=True)
    for n in range(200):
        (pool_dir / f"s{n}").touch()
    inodes: list[list[int]] = [[], []]

    def take_all(pool: SparePool, into: list[int]) -> None:
        for n in range(300):
            fd = pool.take(os.fspath(tmp_path / f".{id(pool)}-{n}"))
            if fd is None:
                return
            into.append(os.fstat(fd).st_ino)
            os.close(fd)

    pools = [SparePool(tmp_path), SparePool(tmp_path)]
    threads = [
        threading.Thread(target=take_all, args=(pool, into))
        for pool, into in zip(pools, inodes, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    taken = inodes[0] + inodes[1]
    assert len(taken) == 200 and len(set(taken)) == 200
    for pool in pools:
        pool.close()


def test_the_pool_keeps_at_most_its_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools.spares, "MAX_SPARES", 3)
    pool = SparePool(tmp_path)
    files = [tmp_path / f"f{n}" for n in range(5)]
    commit_writes([FileWrite(path, b"x") for path in files])
    kept = [pool.give(os.fspath(path)) for path in files]
    assert kept == [True, True, True, False, False]
    assert files[3].exists() and files[4].exists()  # the caller removes what was not kept
    pool.close()


def test_a_spare_on_another_filesystem_stays_a_spare(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a filesystem of its own")
    pool = SparePool(tmp_path)
    (tmp_path / "old").write_bytes(b"old")
    assert pool.give(os.fspath(tmp_path / "old"))
    target = other / f".agentd-test-{os.getpid()}"
    assert pool.take(os.fspath(target)) is None
    assert not target.exists()
    fd = pool.take(os.fspath(tmp_path / "new"))  # still there for a file beside it
    assert fd is not None
    os.close(fd)
    pool.close()


async def test_the_file_tools_write_into_spare_files_too(workspace: Path) -> None:
    async with open_harness(
        workspace, enabled=["write_file", "edit_file"], settings=ALWAYS
    ) as harness:
        assert not (await harness.call("write_file", path="a.txt", content="one\n")).is_error
        for old, new in (("one", "two"), ("two", "three")):
            result = await harness.call("edit_file", path="a.txt", old_string=old, new_string=new)
            assert not result.is_error, result.output
        assert not (await harness.call("write_file", path="a.txt", content="four\n")).is_error
        assert harness.tree() == {"a.txt": b"four\n"}
        pool = harness.box.peek_service(SparePool.for_toolbox)
        # each replacement kept the old file; every one after the first wrote into a spare
        assert pool is not None and (pool.kept, pool.taken) == (3, 2)
        assert hidden_leftovers(harness.root) == []


async def test_a_file_with_extended_attributes_is_not_kept_nor_taken(harness: Harness) -> None:
    """An ACL or a security label of one file must not become another file's."""
    harness.write({"a.txt": "one\n", "b.txt": "b\n"})
    labelled = harness.root / "a.txt"
    try:
        os.setxattr(labelled, "user.agentd-test", b"label")
    except OSError:
        pytest.skip("this filesystem has no user extended attributes")
    pool_dir = harness.root / AGENTD_DIR / SPARE_DIR
    pool_dir.mkdir(parents=True)
    (pool_dir / "labelled-spare").touch()
    os.setxattr(pool_dir / "labelled-spare", "user.agentd-test", b"label")
    patch = envelope(*replace_line("a.txt", "one", "two"), *replace_line("b.txt", "b", "bb"))
    assert not (await harness.call("apply_patch", input=patch)).is_error
    assert harness.tree() == {"a.txt": b"two\n", "b.txt": b"bb\n"}
    assert os.listxattr(harness.root / "a.txt") == []  # a new file, as without spares
    pool = harness.box.peek_service(SparePool.for_toolbox)
    # the labelled spare was not taken (put back under a name no pool takes, as it was);
    # of the two old files only b.txt's was kept
    assert pool is not None and (pool.taken, pool.kept) == (0, 1)
    [put_back] = pool_dir.glob(".not-a-spare-*")
    assert os.listxattr(put_back) == ["user.agentd-test"]


def test_a_closed_pool_neither_takes_nor_keeps(tmp_path: Path) -> None:
    pool = SparePool(tmp_path)
    (tmp_path / "old").write_bytes(b"old")
    assert pool.give(os.fspath(tmp_path / "old"))
    pool.close()
    (tmp_path / "older").write_bytes(b"older")
    assert not pool.give(os.fspath(tmp_path / "older"))
    assert (tmp_path / "older").read_bytes() == b"older"  # left for the caller to remove
    assert pool.take(os.fspath(tmp_path / "new")) is None
    assert not (tmp_path / "new").exists()


def fake_kernel(tmp_path: Path, of: Path, options: str | None) -> dict[str, Path]:
    """A /sys and a /proc that say the block device of `of` is an ext4 mounted with
    `options` (None: not an ext4): `creating_files_is_slow`'s arguments."""
    device = of.stat().st_dev
    sysfs, procfs = tmp_path / "sys", tmp_path / "proc"
    (sysfs / "dev" / "block").mkdir(parents=True)
    (sysfs / "dev" / "block" / f"{os.major(device)}:{os.minor(device)}").symlink_to(
        "../../devices/virtual/block/disk7"
    )
    if options is not None:
        (procfs / "fs" / "ext4" / "disk7").mkdir(parents=True)
        (procfs / "fs" / "ext4" / "disk7" / "options").write_text(options.replace(" ", "\n"))
    return {"sysfs": sysfs, "procfs": procfs}


@pytest.mark.parametrize(
    ("options", "slow"),
    [
        ("rw delalloc nojournal_checksum barrier auto_da_alloc user_xattr", True),
        ("rw delalloc journal_checksum barrier auto_da_alloc data=ordered", False),
        ("rw data=writeback", False),
        (None, False),  # a block device that is not an ext4
    ],
)
def test_creating_files_is_slow_on_an_ext4_without_a_journal_only(
    tmp_path: Path, workspace: Path, options: str | None, slow: bool
) -> None:
    kernel = fake_kernel(tmp_path, workspace, options)
    assert creating_files_is_slow(workspace, **kernel) is slow


def test_where_the_kernel_cannot_tell_creating_files_is_not_slow(
    tmp_path: Path, workspace: Path
) -> None:
    empty = {"sysfs": tmp_path / "sys", "procfs": tmp_path / "proc"}  # no block device
    assert not creating_files_is_slow(workspace, **empty)
    assert not creating_files_is_slow(tmp_path / "missing")
    if Path("/dev/shm").is_dir() and Path("/dev/shm").stat().st_dev != workspace.stat().st_dev:
        assert not creating_files_is_slow(Path("/dev/shm"))  # tmpfs: no block device


def test_the_kernel_agrees_about_this_machine(workspace: Path) -> None:
    """On the real /proc and /sys: where the workspace is on an ext4, the ext4's own sysfs
    entry names its journal's task, `<none>` when it has no journal."""
    device = workspace.stat().st_dev
    try:
        name = os.path.basename(
            os.readlink(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
        )
        journal = Path(f"/sys/fs/ext4/{name}/journal_task").read_text().strip()
    except OSError:
        pytest.skip("the workspace is not on an ext4 whose sysfs entry names its journal")
    assert creating_files_is_slow(workspace) is (journal == "<none>")


@pytest.mark.parametrize("slow", [True, False])
async def test_by_default_a_toolbox_keeps_a_pool_where_creating_files_is_slow(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, slow: bool
) -> None:
    asked: list[Path] = []

    def filesystem_says(path: Path) -> bool:
        asked.append(path)
        return slow

    monkeypatch.setattr(tools.spares, "creating_files_is_slow", filesystem_says)
    async with open_harness(workspace, enabled=["apply_patch"]) as harness:
        harness.write({"a.txt": "one\n"})
        for old, new in (("one", "two"), ("two", "three")):
            patch = envelope(*replace_line("a.txt", old, new))
            assert not (await harness.call("apply_patch", input=patch)).is_error
        assert harness.tree() == {"a.txt": b"three\n"}
        pool = harness.box.peek_service(SparePool.for_toolbox)
        assert pool is not None and (pool.kept, pool.taken) == ((2, 1) if slow else (0, 0))
        assert (harness.root / AGENTD_DIR).exists() is slow
        assert asked == [harness.root]  # once per toolbox
        assert hidden_leftovers(harness.root) == []


def test_the_agentd_gitignore_is_made_once_and_never_through_a_link(tmp_path: Path) -> None:
    """What the pool and the rollouts both call: the agent's commands may have put a link
    where `.agentd/.gitignore` goes, and the daemon must not write where it points."""
    agentd = tmp_path / AGENTD_DIR
    agentd.mkdir()
    outside = tmp_path / "outside.txt"
    (agentd / ".gitignore").symlink_to(outside)  # dangling: nothing there yet
    fd = os.open(agentd, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ignore_in_git(fd)
        assert not outside.exists()
        (agentd / ".gitignore").unlink()
        ignore_in_git(fd)
        assert (agentd / ".gitignore").read_text() == AGENTD_GITIGNORE
        (agentd / ".gitignore").write_text("mine\n")
        ignore_in_git(fd)  # one that is there is the user's
        assert (agentd / ".gitignore").read_text() == "mine\n"
    finally:
        os.close(fd)
