"""Where chapter 08 read stamps before :mod:`fmd.provenance`; kept for the import in tests/test_engine.py."""
from ..provenance import read_stamp  # noqa: F401
