import os
import signal
import subprocess
import sys

import pytest
import torch

# A test marked `native` runs native code that can take the process down (inductor's generated C++,
# ONNX Runtime): it runs again in a child pytest, so a crash fails that test, with its signal, and
# the rest of the suite still runs and reports.
CHILD_ENV = "FMD_NATIVE_CHILD"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)


def pytest_configure(config):
    config.addinivalue_line("markers", "native: runs native code that can crash; isolated in a child "
                                       "process")


def _crash_reason(returncode: int) -> str:
    # A child killed by a signal: negative from subprocess; 128 + N where a shell sat between.
    number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    try:
        return f"killed by {signal.Signals(number).name}"
    except ValueError:
        return f"exit status {returncode}"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if pyfuncitem.get_closest_marker("native") is None or os.environ.get(CHILD_ENV):
        return None
    root = str(pyfuncitem.config.rootpath)
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--no-header",
               "-o", "addopts=", pyfuncitem.nodeid]
    child = subprocess.run(command, cwd=root, env={**os.environ, CHILD_ENV: "1"},
                           capture_output=True, text=True)
    if child.returncode != 0:
        tail = "\n".join((child.stdout + child.stderr).splitlines()[-40:])
        pytest.fail(f"{pyfuncitem.nodeid} failed in its child process ({_crash_reason(child.returncode)})"
                    f":\n{tail}", pytrace=False)
    return True
