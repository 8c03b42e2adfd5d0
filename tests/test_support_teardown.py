"""The test suite's own hygiene: a run stopped by SIGTERM still tears its session fixtures down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

INNER = '''
import os, time, pytest

@pytest.fixture(scope="session")
def resource():
    yield
    with open(os.environ["NNF_TEARDOWN_MARK"], "w") as f:
        f.write("torn down")

def test_waits(resource):
    print("READY", flush=True)
    time.sleep(120)
'''


@pytest.mark.slow  # a pytest run in a subprocess (~4 s)
def test_sigterm_runs_session_teardown(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    mark = tmp_path / "mark"
    env = {**os.environ, "NNF_TEARDOWN_MARK": str(mark)}
    with subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-s", "-p", "tests.conftest", "-p",
                           "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 120
            for line in proc.stdout:
                if "READY" in line:
                    break
                assert time.monotonic() < deadline, "the inner test run did not start"
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert mark.read_text() == "torn down"
