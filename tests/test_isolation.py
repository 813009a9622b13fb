"""A native crash inside a `native` test fails that test, names the signal, and the suite goes on."""
from pathlib import Path

pytest_plugins = "pytester"


def test_a_crashing_native_test_fails_alone_with_its_signal(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_crash="""
        import os
        import pytest

        @pytest.mark.native
        def test_aborts():
            os.abort()  # as glibc does when it finds the heap corrupted

        @pytest.mark.native
        def test_passes_in_its_child():
            assert os.environ["FMD_NATIVE_CHILD"] == "1"

        def test_after_the_crash():
            assert "FMD_NATIVE_CHILD" not in os.environ
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_aborts failed in its child process (killed by SIGABRT)*"])
