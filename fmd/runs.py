"""Run records on disk: one JSON file per training run, keyed by a hash of its configuration.

Layout under the runs root (default ``data/runs/`` in the repository)::

    <dataset>-<conv>-<key>/record.json          the finished run's record (committed for figures)
    <dataset>-<conv>-<key>/checkpoints/last.pt  its latest checkpoint (not committed)

The key is a stable hash of the configuration, so a notebook that asks for a run someone has
already made finds its record instead of training again.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, TypedDict, Union

from .provenance import REPO_ROOT, atomic_write_bytes

PathLike = Union[str, Path]

RUNS_ROOT = REPO_ROOT / "data" / "runs"
RECORD_NAME = "record.json"


class HistoryRow(TypedDict):
    """One epoch of a run (``record["history"][i]``)."""

    epoch: int
    train_loss: float
    train_top1: float
    test_loss: float
    test_top1: float
    test_top5: float
    lr: float
    temperatures: Dict[str, float]  # each role's temperature at the epoch's last step
    train_images: int
    train_seconds: float
    train_images_per_s: float
    eval_seconds: float
    eval_images_per_s: float
    epoch_seconds: float


class FinalMetrics(TypedDict):
    """The last epoch's results (``record["final"]``)."""

    test_top1: float
    test_top5: float
    test_loss: float
    train_loss: float
    train_top1: float


class RunRecord(TypedDict, total=False):
    """The schema of ``record.json``, as :func:`fmd.record.make_record` writes it; every reader reads
    these keys. Records committed before a key existed lack it (``total=False``): ``kernel_entropy``
    (FMDConv runs with a kernel attention, since the entropies were recorded), ``loader_workers``
    (image-folder runs), ``precision`` and ``distributed`` (since those options existed),
    ``strategies`` (since a run could tune them; earlier runs computed with "auto")."""

    name: str
    key: str
    config: Dict[str, Any]  # fmd.config.TrainConfig.to_dict(); TrainConfig.from_dict reads it back
    final: FinalMetrics
    best_test_top1: float
    history: List[HistoryRow]
    num_classes: int
    train_images: int
    test_images: int
    input_size: List[int]  # 1×C×H×W
    params: int
    macs: int
    speed: Dict[str, Any]  # train/eval images per second, eval ms per image, what was measured
    speed_accuracy: Dict[str, Dict[str, Any]]  # "macs" and "eval_time": cost, IES, RCS
    kernel_entropy: Dict[str, Any]  # {"images": N, "nats": per-layer entropies}
    wall_time_s: float
    sessions: int
    seed: int
    git_commit: str
    git_dirty: bool
    versions: Dict[str, str]
    device: str
    threads: int
    distributed: Dict[str, Any]
    precision: Dict[str, Any]  # amp, channels_last, compile
    strategies: Dict[str, str]  # dynamic layer → the engine strategy the run computed it with
    loader_workers: int
    created: str  # ISO 8601, UTC


def _plain(value: Any) -> Any:
    """Tuples → lists, recursively, so a config compares equal to its JSON round trip."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def config_key(config: Mapping[str, Any]) -> str:
    """A stable 16-hex-digit hash of a configuration (sorted JSON)."""
    text = json.dumps(_plain(dict(config)), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def run_name(config: Mapping[str, Any]) -> str:
    """The run's folder name: readable fields first, then the key that identifies it."""
    parts = [str(config[field]) for field in ("dataset", "conv") if field in config]
    return "-".join(parts + [config_key(config)])


def run_dir(config: Mapping[str, Any], root: Optional[PathLike] = None) -> Path:
    """The folder of the run with this configuration under ``root`` (default ``data/runs``)."""
    return Path(root if root is not None else RUNS_ROOT) / run_name(config)


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def write_record(record: Mapping[str, Any], root: Optional[PathLike] = None) -> Path:
    """Store a run record in its run folder (``record["name"]``, else from its ``config``)."""
    if "name" in record:
        path = Path(root if root is not None else RUNS_ROOT) / record["name"] / RECORD_NAME
    elif "config" in record:
        path = run_dir(record["config"], root) / RECORD_NAME
    else:
        raise ValueError("a run record needs its 'name' or its 'config'")
    write_json(path, dict(record))
    return path


def read_record(path: PathLike) -> RunRecord:
    """Read one record file (or a run folder's record)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_NAME
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"run record {path} is not valid JSON: {error}") from error


def load_record(config: Mapping[str, Any], root: Optional[PathLike] = None) -> Optional[RunRecord]:
    """The record of the run with exactly this configuration, or ``None`` if there is none yet."""
    path = run_dir(config, root) / RECORD_NAME
    return read_record(path) if path.is_file() else None


def list_records(root: Optional[PathLike] = None) -> List[RunRecord]:
    """Every record under ``root``, sorted by folder name."""
    root = Path(root if root is not None else RUNS_ROOT)
    if not root.is_dir():
        return []
    return [read_record(p) for p in sorted(root.glob(f"*/{RECORD_NAME}"))]


def _matches(config: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    for name, wanted in fields.items():
        if name not in config:
            return False
        value = _plain(config[name])
        if isinstance(wanted, (set, frozenset)):  # any of several values
            if not any(value == _plain(w) for w in wanted):
                return False
        elif value != _plain(wanted):
            return False
    return True


def find(root: Optional[PathLike] = None, records: Optional[Iterable[Mapping[str, Any]]] = None,
         **fields: Any) -> List[Dict[str, Any]]:
    """Records whose config has all the given field values, e.g. ``find(conv="fmdconv")``.

    A set as a value matches any of its members: ``find(conv={"static", "fmdconv"})``.
    """
    pool = list_records(root) if records is None else records
    return [dict(r) for r in pool if _matches(r.get("config", {}), fields)]
