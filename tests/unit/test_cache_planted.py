"""A planted cache folder (issue 31): rows whose `filename` names a file outside the store or a
special file, and a hostile Settings table. diskcache trusts both; the store must not."""

from __future__ import annotations

import os
import sqlite3
import threading
import warnings
from pathlib import Path

import pytest

from pytest_promptopt.llm.cache import ChatRequest, RecordMode, Reply, ReplyCache
from pytest_promptopt.run.ahead import CALLS_FOLDER, CallStore

REQUEST = ChatRequest.build("m", [{"role": "user", "content": "q"}])
VALUE_FILE = os.path.join("ab", "cd", "0123456789abcdef0123456789ab.val")  # diskcache's own shape
COLUMNS = "key, raw, store_time, expire_time, access_time, access_count, size, mode, filename"


def recorded(tmp_path: Path) -> Path:
    """A cache folder holding one reply (for REQUEST)."""
    folder = tmp_path / "cache"
    cache = ReplyCache(folder)
    cache.put(REQUEST, Reply("recorded"))
    cache.close()
    return folder


def plant(db: Path, sql: str, *params: object) -> None:
    con = sqlite3.connect(db)
    con.execute(sql, params)
    con.commit()
    con.close()


def victim(tmp_path: Path) -> Path:
    target = tmp_path / "victim" / "sub" / "important.txt"
    target.parent.mkdir(parents=True)
    target.write_text("precious")
    return target


@pytest.mark.parametrize("store", ["replies", CALLS_FOLDER])
@pytest.mark.parametrize("name", ["absolute", "relative"])
def test_planted_rows_never_delete_files(tmp_path: Path, store: str, name: str) -> None:
    """D1: a row whose `filename` names a file outside the store (absolute, or `..` out of it)
    is a miss, and culling or replacing it removes the row without touching the file."""
    folder = recorded(tmp_path)
    CallStore(folder, RecordMode.NORMAL).close()
    target = victim(tmp_path)
    filename = str(target) if name == "absolute" else os.path.relpath(target, folder / store)
    db = folder / store / "cache.db"
    plant(db, f"insert into Cache({COLUMNS}) values ('expired', 1, 1, 1, 1, 0, 0, 2, ?)", filename)
    if store == "replies":
        plant(db, "update Cache set mode = 2, value = NULL, filename = ? where key = ?", filename, REQUEST.cache_key)
        cache = ReplyCache(folder)
        assert cache.get(REQUEST) is None  # a miss, called again and rewritten
        cache.put(REQUEST, Reply("fresh"))  # replaces the row (diskcache removes its old file)
        cache.put(ChatRequest.build("m", [{"role": "user", "content": "other"}]), Reply("x"))  # culls
        assert cache.get(REQUEST) == Reply("fresh")
        cache.close()
    else:
        calls = CallStore(folder, RecordMode.NORMAL)
        calls.put({"test_a.py::test_a": []})  # a plain run's log write culls the expired row
        calls.close()
    assert target.read_text() == "precious"
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from Cache where key = 'expired'").fetchone() == (0,)  # the row is gone
    con.close()


@pytest.mark.parametrize("where", ["in the store", "outside"])
def test_a_row_naming_a_fifo_is_a_miss_not_a_hang(tmp_path: Path, where: str) -> None:
    """D2: a row whose file is a FIFO (inside the store with diskcache's own file name, or
    anywhere else) is a miss in a replay run: nothing waits for a writer that never comes."""
    folder = recorded(tmp_path)
    fifo = folder / "replies" / VALUE_FILE if where == "in the store" else tmp_path / "pipe"
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)
    filename = VALUE_FILE if where == "in the store" else str(fifo)
    plant(folder / "replies" / "cache.db", "update Cache set mode = 2, value = NULL, filename = ? where key = ?",
          filename, REQUEST.cache_key)
    cache = ReplyCache(folder, RecordMode.REPLAY)
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(cache.get(REQUEST)), daemon=True)
    reader.start()
    reader.join(timeout=60)  # a bound for the old code's hang, not a measurement: the fix returns at once
    if reader.is_alive():  # let the stuck reader go: a writer that opens and closes sends EOF
        with open(fifo, "wb"):
            pass
    assert got == [None]
    cache.close()


def test_a_row_naming_dev_zero_is_a_miss(tmp_path: Path) -> None:
    """D2: a row naming /dev/zero (or a symlink in the store to it) is a miss; nothing is read."""
    folder = recorded(tmp_path)
    link = folder / "replies" / VALUE_FILE
    link.parent.mkdir(parents=True)
    link.symlink_to("/dev/zero")
    for filename in ("/dev/zero", VALUE_FILE):
        plant(folder / "replies" / "cache.db", "update Cache set mode = 2, value = NULL, filename = ? where key = ?",
              filename, REQUEST.cache_key)
        cache = ReplyCache(folder, RecordMode.REPLAY)
        assert cache.get(REQUEST) is None
        cache.close()


HOSTILE_SETTINGS = {
    "disk setting unknown to the Disk": [("disk__directory", "{elsewhere}"), ("disk_min_file_size", 0)],
    "an attribute of the cache": [("_directory", "{elsewhere}")],
    "a pragma that turns off the journal": [("sqlite_journal_mode", "off")],
    "a pragma holding a second statement": [("sqlite_cache_size", "1; DROP TABLE Cache")],
    "an unknown pragma": [("sqlite_writable_schema", 1)],
}


@pytest.mark.parametrize("rows", HOSTILE_SETTINGS.values(), ids=HOSTILE_SETTINGS.keys())
def test_a_hostile_settings_table_is_not_obeyed(tmp_path: Path, rows: list[tuple[str, object]]) -> None:
    """Settings table: diskcache runs `sqlite_*` rows as PRAGMA statements, passes `disk_*` rows
    to its Disk and sets any other key on the cache. A planted table changes none of it: the
    store opens, keeps its entries and its WAL journal, and writes nothing anywhere else."""
    folder = recorded(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "cache.db").write_bytes(b"")
    for key, value in rows:
        value = value.format(elsewhere=elsewhere) if isinstance(value, str) else value
        plant(folder / "replies" / "cache.db", "insert or replace into Settings values (?, ?)", key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cache is not disabled
        cache = ReplyCache(folder)
        assert cache.get(REQUEST) == Reply("recorded")
        big = ChatRequest.build("m", [{"role": "user", "content": "big"}])
        cache.put(big, Reply("y" * 50_000))  # over diskcache's 32 KB: a value file, in the store
        assert cache.get(big) == Reply("y" * 50_000)
        assert cache._store is not None
        assert cache._store._sql("PRAGMA journal_mode").fetchone() == ("wal",)
        assert cache._store._sql("PRAGMA writable_schema").fetchone() == (0,)
        cache.close()
    assert [p.name for p in elsewhere.iterdir()] == ["cache.db"] and (elsewhere / "cache.db").read_bytes() == b""
