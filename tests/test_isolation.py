"""`make test` runs the suite in pytest-xdist workers (`-n 2`): a native crash (inductor's generated
C++, ONNX Runtime, a heap that glibc finds corrupted) fails the test that was running, with the
signal in its report, and a fresh worker runs the rest of the suite."""

pytest_plugins = "pytester"


def test_a_crashing_test_fails_alone_and_the_suite_goes_on(pytester):
    pytester.makepyfile(test_crash="""
        import os

        def test_before():
            assert True

        def test_aborts():
            os.abort()  # as glibc does when it finds the heap corrupted

        def test_after_the_crash():
            assert True
    """)
    result = pytester.runpytest_subprocess("-n", "1", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*worker 'gw0' crashed while running 'test_crash.py::test_aborts'*"])
    assert "Fatal Python error: Aborted" in result.stdout.str() + result.stderr.str()
