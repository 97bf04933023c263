"""The store lock: a second writer fails clearly or waits; the lock is released after a crash of the holder."""

import subprocess
import sys
import textwrap
import time

import pytest

from clado.taxonomy.lock import StoreBusy, store_lock

HOLD = textwrap.dedent(
    """
    import sys, time
    from clado.taxonomy.lock import store_lock
    with store_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def hold_in_subprocess(db, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_fails_with_the_holder_pid(tmp_path):
    db = tmp_path / "clado.db"
    proc = hold_in_subprocess(db, 30)
    try:
        with pytest.raises(StoreBusy, match=rf"clado\.db is being written by another clado process \(pid {proc.pid}\)"):
            with store_lock(db):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_second_writer_can_wait(tmp_path):
    db = tmp_path / "clado.db"
    proc = hold_in_subprocess(db, 1.0)
    start = time.monotonic()
    with store_lock(db, wait=30):
        waited = time.monotonic() - start
    proc.wait()
    assert 0.3 < waited < 30


def test_lock_is_free_after_the_holder_is_killed(tmp_path):
    db = tmp_path / "clado.db"
    proc = hold_in_subprocess(db, 60)
    proc.kill()
    proc.wait()
    with store_lock(db, wait=5):
        pass
