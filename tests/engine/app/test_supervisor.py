"""`up`'s process supervisor: roles in their own processes, stopped on request, in order, and never left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from engine.app.supervisor import Supervisor
from tests.waiting import still_true, wait_for, wait_until


def sleeper_role(control, marker: str) -> None:
    """A role that records its pid and thread budget, then waits to be stopped (or finished)."""
    Path(marker).write_text(f"{os.getpid()} {control.threads} {os.environ.get('OMP_NUM_THREADS')}")
    while not control.stop.wait(0.05):
        if control.finish.is_set():
            Path(marker + ".finished").write_text("1")
            return


def _wait_for(path: Path, timeout_s: float = 60.0) -> str:
    return wait_for(lambda: path.exists() and path.read_text(), timeout_s, f"{path} to be written", step_s=0.05)


def _ended(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[1].split()[0] == "Z"  # a zombie: ended, not yet reaped


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    return bool(wait_until(lambda: _ended(pid), timeout_s, step_s=0.05))


def test_stop_when_a_role_runs_ends_its_process_with_its_thread_budget_applied(tmp_path):
    roles = Supervisor()
    try:
        # given a role started with a budget of 1 thread, and one that is asked to finish
        roles.start("a", sleeper_role, (str(tmp_path / "a"),), threads=1)
        roles.start("b", sleeper_role, (str(tmp_path / "b"),))
        pid, threads, omp = _wait_for(tmp_path / "a").split()
        _wait_for(tmp_path / "b")
        assert (threads, omp) == ("1", "1") and int(pid) != os.getpid()
        # when one is stopped and the other finished
        roles.stop("a", timeout_s=10)
        assert roles.finish("b", timeout_s=10)
        # then both processes have ended, the finished one through its finish path
        assert not roles.alive("a") and not roles.alive("b") and (tmp_path / "b.finished").exists()
        assert roles.exitcode("a") == 0
    finally:
        roles.close()


def test_roles_when_the_parent_is_killed_stop_by_themselves(tmp_path):
    # given a parent process (like `up`) running a role
    marker = tmp_path / "child"
    script = textwrap.dedent(f"""
        import time
        from engine.app.supervisor import Supervisor
        from tests.engine.app.test_supervisor import sleeper_role
        roles = Supervisor()
        roles.start("child", sleeper_role, ({str(marker)!r},))
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[3])
    try:
        child = int(_wait_for(marker).split()[0])
        # when the parent is SIGKILLed (no chance to stop anything)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        # then the role notices and ends
        assert _gone(child), "the role outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_start_when_ctrl_c_reaches_the_process_group_leaves_the_roles_to_the_parent(tmp_path):
    roles = Supervisor()
    try:
        roles.start("a", sleeper_role, (str(tmp_path / "a"),))
        pid = int(_wait_for(tmp_path / "a").split()[0])
        # when the role gets SIGINT (a terminal's Ctrl-C goes to the whole group)
        os.kill(pid, signal.SIGINT)
        # then it keeps running until the parent stops it, in its own order
        assert still_true(lambda: roles.alive("a"), for_s=0.5)
        roles.stop("a", timeout_s=10)
        assert not roles.alive("a")
    finally:
        roles.close()


def test_watch_when_a_role_is_killed_then_restarted_with_backoff_and_the_board_says_so(tmp_path, redis_client):
    from stream.keys import Keys
    from stream.role import StatusBoard

    keys = Keys("sup:")
    board = StatusBoard(redis_client, keys, "up-test")
    roles = Supervisor(board, initial_s=0.2, max_s=1.0)
    try:
        # given a running role
        roles.start("ingest", sleeper_role, (str(tmp_path / "i"),))
        first = int(_wait_for(tmp_path / "i").split()[0])
        (tmp_path / "i").unlink()
        # when it is killed with SIGKILL
        os.kill(first, signal.SIGKILL)
        # then the supervisor notices, records it restarting with how it ended, and starts it again
        wait_for(lambda: roles.watch() or roles.restarts("ingest") == 1, 10, "the death noticed")
        [st] = StatusBoard.read(redis_client, keys)
        assert (st.role, st.state, st.error, st.restarts) == ("ingest", "restarting", "killed by SIGKILL", 1)
        wait_for(lambda: roles.watch() is not None and (tmp_path / "i").exists() and (tmp_path / "i").read_text(), 60,
                 "the role started again")
        assert int((tmp_path / "i").read_text().split()[0]) != first
        assert [s.state for s in StatusBoard.read(redis_client, keys)] == ["running"]
        # and a role asked to stop is not restarted, and leaves no status
        roles.stop("ingest", timeout_s=10)
        assert roles.watch() == [] and not roles.alive("ingest") and StatusBoard.read(redis_client, keys) == []
    finally:
        roles.close()
