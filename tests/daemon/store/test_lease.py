import subprocess
import sys

from taoflow.daemon.store.lease import Lease
from taoflow.daemon.store.storage import Database


def test_one_holder_at_a_time_and_release(tmp_path):
    db = Database(tmp_path / "l.db")
    mine = Lease(db, "round", stale_after_s=60)
    theirs = Lease(db, "round", stale_after_s=60, pid=1)  # pid 1 is alive: a live holder elsewhere
    assert theirs.acquire() is None
    holder = mine.acquire()
    assert holder is not None and holder.pid == 1
    theirs.release()
    assert mine.acquire() is None and mine.holder().owner == mine.owner
    assert mine.renew()
    mine.release()
    assert mine.holder() is None
    db.close()


def test_a_dead_holder_or_an_unrenewed_lease_is_taken_over(tmp_path):
    db = Database(tmp_path / "l.db")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert Lease(db, "round", stale_after_s=60, pid=dead.pid).acquire() is None
    mine = Lease(db, "round", stale_after_s=60)
    assert mine.acquire() is None  # its process is gone
    silent = Lease(db, "other", stale_after_s=30, pid=1)
    assert silent.acquire(now=1000.0) is None
    assert Lease(db, "other", stale_after_s=30).acquire(now=1020.0) is not None  # renewed 20 s ago: still live
    taker = Lease(db, "other", stale_after_s=30)
    assert taker.acquire(now=1031.0) is None  # 31 s without renewal: stale
    assert not silent.renew()  # the old holder learns it lost the lease
    db.close()
