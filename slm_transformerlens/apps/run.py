"""``slm-lens analyze`` at scale: streamed parts, a manifest, resuming, bad items, and torchrun shards.

The items (input files) are cut into fixed parts of ``part_size`` consecutive items. Each part is analysed
(batched under ``batch_tokens``), written as ``parts/part-NNNNN.parquet`` and only then logged as done in
``parts/done-rank<R>.jsonl`` (one JSON line per part: its items, its file, its failed items). The manifest
(``manifest.json``, written before any compute) holds the checkpoint's fingerprint, the settings that
change the results, the part size and every item's id and path: ``resume=True`` skips the logged parts and
refuses a manifest of other settings. Because parts are fixed, an interrupted and resumed run (or a run on
several processes) groups utterances exactly as an uninterrupted one.

Under ``torchrun`` (``WORLD_SIZE > 1``; ``RANK`` / ``LOCAL_RANK`` from the environment) the parts still to
do are split into contiguous shards, one per rank (no item twice, no padding items); every rank writes its
own parts and log; rank 0 checks the folder before anything runs, shows the one progress bar, merges the
parts and writes the one report. ``torch.distributed`` is initialised (gloo on CPU, NCCL on CUDA) only when
``WORLD_SIZE > 1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from slm_transformerlens.apps.report import (
    ReportFiles,
    prepare_output_folder,
    swapped_control,
    write_lens_report,
)
from slm_transformerlens.errors import OutputError, SLMError
from slm_transformerlens.lens.base import Lens
from slm_transformerlens.lens.protocol import LensProtocol
from slm_transformerlens.outputs import RECORD, claim_output_files

__all__ = [
    "ON_ERROR",
    "Launch",
    "RunError",
    "RunItem",
    "checkpoint_fingerprint",
    "claim_output_folder",
    "launch_from_environment",
    "run_analysis",
    "shard",
]

#: What a bad item does: ``stop`` the run (finished parts are kept) or ``skip`` it (named in the report).
ON_ERROR: tuple[str, ...] = ("stop", "skip")
MANIFEST = "manifest.json"
PARTS = "parts"
_FORMAT = 2


class RunError(SLMError, RuntimeError):
    """A run cannot start or go on: another run's folder, a manifest of other settings, a bad item."""


@dataclass(frozen=True)
class RunItem:
    """One input of a run: a stable id (the path as given) and the file."""

    id: str
    path: Path


@dataclass(frozen=True)
class Launch:
    """Where this process stands in a ``torchrun`` launch (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Several processes (``torch.distributed`` is used)."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: checks the folder, shows progress, merges and reports."""
        return self.rank == 0


def launch_from_environment() -> Launch:
    """``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as ``torchrun`` (or ``accelerate launch``) sets them."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise RunError(
            f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({error}); launch with torchrun"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise RunError(f"RANK={rank} is not within WORLD_SIZE={world}; launch with torchrun")
    return Launch(rank=rank, world_size=world, local_rank=local)


def shard(n: int, rank: int, world_size: int) -> range:
    """The contiguous slice of ``range(n)`` rank ``rank`` of ``world_size`` takes (sizes differ by <= 1)."""
    return range(rank * n // world_size, (rank + 1) * n // world_size)


def checkpoint_fingerprint(path: str | Path) -> str:
    """A sha256 of a checkpoint folder (or file): every file's relative name, size and contents.

    The contents are streamed (1 MiB at a time), so weights replaced in place with the same names and sizes
    change the fingerprint. Cost: about one read of the checkpoint (sha256 runs at ~0.8 GB/s on one core of
    the development machine: 0.13 s for 100 MB).

    Raises:
        OutputError: a file of the checkpoint cannot be read.
    """
    root = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        try:
            size = file.stat().st_size
            digest.update(f"{file.relative_to(root) if root.is_dir() else file.name}:{size}\n".encode())
            contents = hashlib.sha256()
            with open(file, "rb") as stream:
                while chunk := stream.read(1 << 20):
                    contents.update(chunk)
            digest.update(contents.digest())
        except OSError as error:
            raise OutputError(
                f"cannot read {file} to fingerprint the checkpoint ({error.strerror or error}); check that "
                "the checkpoint folder is readable"
            ) from None
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """Settings as JSON-comparable values (dataclasses, tuples, sets, paths)."""
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return value


#: Part files and logs in ``parts/`` (every name a run writes there; the manifest's ``parts`` pattern).
_PART_NAMES = re.compile(r"parts/(part-\d{5}(-\d+)?\.parquet(\.tmp)?|done-rank\d+\.jsonl)")
#: The names a report can write at the top of the folder: a run's own files when its manifest lists them
#: (a format-1 manifest did not list them); a file of these names that the run did not write is refused.
_REPORT_NAMES = re.compile(
    r"(report\.md|summary\.csv|peaks\.csv|heatmap\.csv\.gz|(swapped_)?transcription\.(parquet|csv\.gz)"
    r"|failed_items\.csv|(heatmap|modality_mass|rates_[\w-]+)\.(html|png))"
)


def _files(out: Path) -> set[str]:
    """Every file (and link) below ``out``, as paths relative to it (``/``-separated)."""
    if not out.is_dir():
        return set()
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_symlink() or not p.is_dir()}


def _run_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of the run in ``out``, or ``None`` when ``out`` holds no ``manifest.json``.

    Raises:
        OutputError: a ``manifest.json`` that is not one of a run (unreadable, or not this package's).
    """
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        manifest = error
    if not isinstance(manifest, dict) or not {"format", "settings", "items", "part_size"} <= set(manifest):
        why = manifest if isinstance(manifest, Exception) else "not an slm-lens analyze manifest"
        raise OutputError(
            f"{path} is not the manifest of an slm-lens run ({why}), so nothing in {out} is known to be the "
            "package's and nothing is removed; pass out_dir= an empty or new folder"
        )
    return manifest


def _owned(out: Path, manifest: dict[str, Any], files: set[str]) -> set[str]:
    """The files of ``files`` that the run of ``manifest`` wrote: the manifest, the part files and logs
    (by their names in ``parts/``) and the report files its ``written`` list names (a format-1 manifest has
    no list: the report's own names)."""
    written = manifest.get("written")
    owned = {MANIFEST, MANIFEST + ".tmp", RECORD} | {f for f in files if _PART_NAMES.fullmatch(f)}
    if isinstance(written, list):
        owned |= {str(name) for name in written}
    else:
        owned |= {f for f in files if _REPORT_NAMES.fullmatch(f)}
    return owned & files


def _shown(names: Iterable[str], n: int = 4) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def claim_output_folder(out_dir: str | Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Check ``out_dir`` before any compute: writable, and empty unless it holds a run to resume / overwrite.

    A folder holding a run (its ``manifest.json``) needs ``resume`` (go on with it) or ``overwrite``; a run
    that stopped before it analysed anything (its model did not load...) is replaced without them.
    ``overwrite`` removes only what the run wrote, as its manifest lists it (the manifest, the part files
    and logs in ``parts/``, the report files named in its ``written`` list); any other file in the folder
    (your notes, figures) is kept. A folder holding files but no run is never used, with or without
    ``overwrite``; nor is a run folder in which a file the run did not write has a name the report writes
    (it would be overwritten).

    Raises:
        OutputError: not writable, holding files but no run, or a foreign file of a report file's name.
        RunError: another run without ``resume`` / ``overwrite``; both flags; ``resume`` without a manifest.
    """
    out = Path(out_dir)
    if resume and overwrite:
        raise RunError("--resume continues a run and --overwrite clears it: pass one of them")
    files = _files(out)
    manifest = _run_manifest(out)
    if resume and manifest is None:
        raise RunError(f"nothing to resume in {out}: it holds no {MANIFEST}; run without --resume")
    if manifest is None:
        if files or (out.is_dir() and any(out.iterdir())):
            shown = _shown(sorted({f.split("/")[0] for f in files} or {p.name for p in out.iterdir()}))
            raise OutputError(
                f"the output folder {out} holds files that slm-lens analyze did not write ({shown}) and no "
                f"run of it ({MANIFEST}); they are never removed or overwritten: pass out_dir= an empty or "
                "new folder"
            )
    else:
        owned = _owned(out, manifest, files)
        foreign = files - owned
        clash = sorted(f for f in foreign if _REPORT_NAMES.fullmatch(f))
        if clash:
            raise OutputError(
                f"{out} holds a run and also {_shown(clash)}, which that run did not write and a report "
                "would overwrite: move it elsewhere, or pass out_dir= an empty or new folder"
            )
        if (
            not resume
            and not _done_log(out)
            and all(f.startswith(MANIFEST) or f.endswith(".jsonl") for f in owned)
        ):
            overwrite = True  # a run that failed before analysing anything (e.g. its model did not load)
        if not (resume or overwrite):
            kept = f" (the other files, {_shown(foreign)}, are kept)" if foreign else ""
            raise RunError(
                f"{out} holds another run; pass --resume to continue it, --overwrite to remove the files "
                f"that run wrote{kept}, or another --out"
            )
        if overwrite:
            for name in sorted(owned):
                (out / name).unlink(missing_ok=True)
            if (out / PARTS).is_dir() and not any((out / PARTS).iterdir()):
                (out / PARTS).rmdir()
        # a format-1 run's report files (its manifest has no list): on the record, so its report may replace them
        report = [f for f in owned if _REPORT_NAMES.fullmatch(f) and (out / f).exists()]
        claim_output_files(out, report, known=report)
    prepare_output_folder(out)
    (out / PARTS).mkdir(exist_ok=True)
    return out


def _record_written(out: Path, before: set[str], result: ReportFiles | None) -> None:
    """Add the files written since ``before`` (the report's) to the manifest's ``written`` list."""
    manifest = _run_manifest(out)
    if manifest is None:
        return
    written = set(manifest.get("written") or ())
    if not isinstance(manifest.get("written"), list):  # a format-1 run: its report files by their names
        written |= {f for f in before if _REPORT_NAMES.fullmatch(f)}
    written |= {f for f in _files(out) - before if not _PART_NAMES.fullmatch(f) and f != MANIFEST}
    if result is not None:
        written |= {Path(p).relative_to(out).as_posix() for p in result.files.values() if Path(p).is_file()}
    written.discard(MANIFEST)
    _write_json(out / MANIFEST, {**manifest, "format": _FORMAT, "written": sorted(written)})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunError(f"cannot read {path} ({error}); pass --overwrite to start the run again") from None


def _write_json(path: Path, value: Any) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(value, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} then, {new!r} now"]


def _done_log(out: Path) -> list[dict[str, Any]]:
    """Every logged part of every rank (a torn last line from a killed process is ignored)."""
    records = []
    for log in sorted((out / PARTS).glob("done-rank*.jsonl")):
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "part" in record:
                records.append(record)
    return records


def _latest(records: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each part's record from its latest attempt (a resumed run redoes parts with failed items)."""
    latest: dict[int, dict[str, Any]] = {}
    for record in records:
        part = int(record["part"])
        if part not in latest or int(record.get("attempt", 0)) >= int(latest[part].get("attempt", 0)):
            latest[part] = record
    return latest


def _readable(path: Path) -> bool:
    """Whether ``path`` is a whole parquet file (its footer reads)."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except (OSError, ValueError):
        return False
    return True


def _check_items(items: Sequence[RunItem]) -> None:
    """Each input once (by its resolved path).

    Raises:
        RunError: a file given twice (also as another spelling of its path).
    """
    seen: dict[Path, str] = {}
    for item in items:
        key = Path(item.path).resolve()
        if key in seen:
            same = f"as {seen[key]!r} and {item.id!r}" if seen[key] != item.id else f"as {item.id!r}"
            raise RunError(f"the input {key} is given twice ({same}); pass each input once")
        seen[key] = item.id


def _start(
    out: Path, items: Sequence[RunItem], settings: dict[str, Any], part_size: int, resume: bool
) -> tuple[int, list[int], int]:
    """Write (or check, on resume) the manifest; the part size, the parts still to do and the attempt.

    On resume the parts to do are those never logged, those whose items failed (retried: the file may be
    fixed) and those whose part file is missing or unreadable (analysed again)."""
    listed = [{"id": item.id, "path": str(Path(item.path).resolve())} for item in items]
    attempt = 0
    if resume:
        manifest = _read_json(out / MANIFEST)
        changed = _differences(manifest.get("settings"), settings)
        paths = [str(Path(i.get("path", "")).resolve()) for i in manifest.get("items", [])]
        if paths != [i["path"] for i in listed]:
            changed.append("the input items differ")
        changed = [
            "the checkpoint's files changed since the run began (checkpoint_fingerprint differs)"
            if c.startswith("checkpoint_fingerprint:")
            else c
            for c in changed
        ]
        if changed:
            raise RunError(
                f"{out / MANIFEST} was written by a run with other settings ({'; '.join(changed[:4])}); "
                "resume with the same settings, or pass --overwrite to start again"
            )
        part_size = int(manifest["part_size"])
        attempt = int(manifest.get("attempt", 0)) + 1
        _write_json(out / MANIFEST, {**manifest, "attempt": attempt})
    else:
        _write_json(
            out / MANIFEST,
            {
                "format": _FORMAT,
                "settings": settings,
                "part_size": part_size,
                "items": listed,
                "attempt": 0,
                "parts": _PART_NAMES.pattern,
                "written": [],
            },
        )
    latest = _latest(_done_log(out))
    done = {
        part
        for part, record in latest.items()
        if not record.get("failed") and (not record.get("file") or _readable(out / record["file"]))
    }
    n_parts = -(-len(items) // part_size)
    return part_size, [p for p in range(n_parts) if p not in done], attempt


#: How often rank 0 re-reads the other ranks' logs for its progress bar (seconds).
_POLL_SECONDS = 0.5


class _Progress:
    """Rank 0's progress bar over the whole run: the items every rank has logged in the shared folder.

    Counted after each of rank 0's parts and, with several processes, by a background thread every
    :data:`_POLL_SECONDS` (it reads only the log lines added since its last read), so other ranks' parts
    show as they finish, also while rank 0 waits for the others after its own shard. It only reads files:
    no collective, so nothing can deadlock however many parts each rank has. ``on_progress(done, total)``
    is called (from either thread) whenever the count grows.
    """

    def __init__(
        self,
        out: Path,
        total: int,
        enabled: bool,
        world_size: int,
        on_progress: Callable[[int, int], None] | None = None,
        interval: float = _POLL_SECONDS,
    ) -> None:
        self.out = out
        self.total = total
        self.on_progress = on_progress
        self._offsets: dict[Path, int] = {}
        self._logged = 0
        self._lock = threading.Lock()
        self.before = self._scan()
        self.done = 0
        desc = "analyze" + (f" ({world_size} processes)" if world_size > 1 else "")
        self.bar = tqdm(total=total, desc=desc, unit="utt", disable=not enabled, dynamic_ncols=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if world_size > 1:
            self._thread = threading.Thread(
                target=self._poll, args=(interval,), name="slm-lens-progress", daemon=True
            )
            self._thread.start()

    def _scan(self) -> int:
        """Items logged by every rank so far (complete new lines only; a torn line is skipped)."""
        for log in sorted((self.out / PARTS).glob("done-rank*.jsonl")):
            offset = self._offsets.get(log, 0)
            try:
                with open(log, "rb") as file:
                    file.seek(offset)
                    data = file.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                try:
                    record = json.loads(line)
                    self._logged += len(record.get("items", [])) + len(record.get("failed", []))
                except (ValueError, AttributeError, TypeError):
                    continue
            self._offsets[log] = offset + end
        return self._logged

    def refresh(self) -> None:
        """Count the new log lines and move the bar."""
        with self._lock:
            done = self._scan() - self.before
            if done <= self.done:
                return
            self.bar.update(done - self.done)
            self.done = done
            if self.on_progress is not None:
                self.on_progress(done, self.total)

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.refresh()

    def close(self) -> None:
        """Stop polling, count the last lines and close the bar."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.refresh()
        self.bar.close()


def _analyse_part(
    part_items: Sequence[tuple[int, RunItem]],
    read_item: Callable[[Path], Any],
    table_of: Callable[[Sequence[Any]], pd.DataFrame],
    on_error: str,
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """The table of one part (``utterance`` = the item's index in the run, ``item`` = its id) and its
    failed items; a bad item stops the run (``on_error="stop"``) or is left out with its error."""
    failed: list[dict[str, str]] = []

    def fail(item: RunItem, error: Exception) -> None:
        if on_error == "stop":
            raise RunError(
                f"item {item.id}: {error}. Finished parts are kept: fix or remove it and pass --resume, "
                "or pass --on-error skip to leave bad items out"
            ) from error
        failed.append({"id": item.id, "error": " ".join(str(error).split())})

    good: list[tuple[int, RunItem, Any]] = []
    for index, item in part_items:
        try:
            good.append((index, item, read_item(item.path)))
        except (SLMError, OSError) as error:
            fail(item, error)
    try:
        table = table_of([u for _, _, u in good]) if good else pd.DataFrame()
        kept = good
    except (SLMError, OSError):  # find the bad item(s) one at a time
        frames, kept = [], []
        for entry in good:
            try:
                frames.append(table_of([entry[2]]))
                kept.append(entry)
            except (SLMError, OSError) as error:
                fail(entry[1], error)
        for position, frame in enumerate(frames):
            frame["utterance"] = position
        table = pd.concat([f for f in frames if not f.empty], ignore_index=True) if frames else pd.DataFrame()
    if not table.empty:
        index_of = [index for index, _, _ in kept]
        id_of = [item.id for _, item, _ in kept]
        local = table["utterance"].to_numpy()
        table["utterance"] = [index_of[u] for u in local]
        table.insert(1, "item", pd.array([id_of[u] for u in local], dtype="string"))
    return table, failed


def _write_part(
    out: Path,
    launch: Launch,
    part: int,
    table: pd.DataFrame,
    items: list[str],
    failed: list,
    attempt: int = 0,
) -> None:
    """The part's parquet (written whole, then renamed), then its line in this rank's log."""
    record: dict[str, Any] = {
        "part": part,
        "items": items,
        "failed": failed,
        "file": None,
        "attempt": attempt,
    }
    if not table.empty:
        name = f"{PARTS}/part-{part:05d}" + (f"-{attempt}" if attempt else "") + ".parquet"
        temporary = out / f"{name}.tmp"
        table.to_parquet(temporary, index=False)
        os.replace(temporary, out / name)
        record["file"] = name
    log_path = out / PARTS / f"done-rank{launch.rank}.jsonl"
    torn = log_path.is_file() and log_path.stat().st_size > 0 and not log_path.read_bytes().endswith(b"\n")
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(("\n" if torn else "") + json.dumps(record) + "\n")
        log.flush()
        os.fsync(log.fileno())


def _read_part(path: Path) -> pd.DataFrame:
    """One part's table.

    Raises:
        RunError: the file is missing or unreadable (truncated, not parquet).
    """
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:
        what = "is missing" if not path.exists() else f"cannot be read ({' '.join(str(error).split())[:200]})"
        raise RunError(
            f"the part file {path} {what}; run the same command with --resume to analyse its items again"
        ) from None


def _merge(out: Path, todo: Sequence[int]) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Every logged part's table (its latest attempt), in item order, and every failed item.

    Raises:
        RunError: an item logged twice, a part of this run (``todo``) that no rank logged in ``out``
            (on several nodes: a folder that is not shared), or a part file missing or unreadable.
    """
    latest = _latest(_done_log(out))
    missing = sorted(set(todo) - set(latest))
    if missing:
        raise RunError(
            f"parts {missing[:5]} were analysed but are not logged in {out / PARTS}: on several nodes --out "
            "must be one folder every node writes to (a shared file system)"
        )
    records = [latest[part] for part in sorted(latest)]
    seen: set[str] = set()
    for record in records:
        ids = list(record["items"]) + [f["id"] for f in record.get("failed", [])]
        twice = seen.intersection(ids)
        if twice:
            raise RunError(f"items {sorted(twice)[:3]} are logged twice in {out / PARTS}; pass --overwrite")
        seen.update(ids)
    frames = [_read_part(out / r["file"]) for r in records if r.get("file")]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not table.empty:
        table = table.sort_values("utterance", kind="stable").reset_index(drop=True)
    failed = [f for r in records for f in r.get("failed", [])]
    return table, failed


def _collective(launch: Launch, value: Any, *, source_only: bool) -> list[Any]:
    """Broadcast ``value`` from rank 0 (``source_only``) or gather every rank's; plain list with one process."""
    if not launch.distributed:
        return [value]
    import torch.distributed as dist

    if source_only:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box
    gathered: list[Any] = [None] * launch.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def _init_distributed(launch: Launch, device: str | None, split: bool = False) -> str | None:
    """``torch.distributed`` for several processes (NCCL on CUDA, else gloo); this rank's device.

    A model split over devices (``split``: its loader's ``device_map``) takes the machine's devices itself:
    one process per machine, no device is pinned, and the ranks talk over gloo."""
    if not launch.distributed:
        return device
    import torch
    import torch.distributed as dist

    if split:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if local > 1:
            raise RunError(
                f"--device-map splits one model over this machine's devices, and torchrun started {local} "
                "processes on it (each would load the whole model): launch one process per machine "
                "(torchrun --nproc-per-node 1), or drop --device-map to run one model per GPU"
            )
        if not dist.is_initialized():
            dist.init_process_group(backend="gloo")
        return device
    cuda = (device is None or str(device).startswith("cuda")) and torch.cuda.is_available()
    if cuda:
        device = f"cuda:{launch.local_rank}"
        torch.cuda.set_device(launch.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def _group_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _end_group() -> None:
    """Destroy the default process group (after the run's last collective)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _swapped_audio(
    model: Any,
    items: Sequence[RunItem],
    table: pd.DataFrame,
    read_item: Callable[[Any, Path], Any],
    protocol: LensProtocol,
    make_lens: Callable[[Any], Lens | None],
    batch_tokens: int,
) -> tuple[pd.DataFrame | None, str | None]:
    """The swapped-audio table of the analysed items (rank 0, after the merge), numbered like ``table``.

    The donors are drawn from every analysed item, so this second forward pass runs once over the whole
    data (not per part, not resumed); :attr:`LensProtocol.max_swap_words` bounds it.
    """
    reason = protocol.swap_limit_reason(table)
    if reason is not None:
        return None, reason
    analysed = sorted(int(u) for u in table["utterance"].unique())
    utterances = [read_item(model, items[u].path) for u in analysed]
    swapped, note = swapped_control(
        model, utterances, protocol, table, lens=make_lens(model), batch_tokens=batch_tokens, progress=False
    )
    if swapped is not None and not swapped.empty:
        index = [analysed[int(u)] for u in swapped["utterance"]]
        swapped["utterance"] = index
        swapped.insert(1, "item", pd.array([items[u].id for u in index], dtype="string"))
    return swapped, note


def run_analysis(
    items: Sequence[RunItem],
    out_dir: str | Path,
    *,
    load_model: Callable[[str | None], Any],
    read_item: Callable[[Any, Path], Any],
    settings: dict[str, Any],
    protocol: LensProtocol,
    make_lens: Callable[[Any], Lens | None] = lambda model: None,
    device: str | None = None,
    split: bool = False,
    batch_tokens: int = 4096,
    part_size: int = 64,
    resume: bool = False,
    overwrite: bool = False,
    on_error: str = "stop",
    charts: bool = True,
    png: bool = True,
    title: str = "Lens analysis",
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    launch: Launch | None = None,
) -> ReportFiles | None:
    """Analyse ``items`` in streamed, resumable parts (sharded over ``torchrun`` ranks); rank 0 reports.

    Args:
        items: the inputs, in the order their ``utterance`` numbers follow.
        out_dir: the output folder: checked before anything loads (see :func:`claim_output_folder`).
        load_model: ``device -> model`` (called once per process, after the folder is checked).
        read_item: ``(model, path) -> utterance``; its package errors mark the item bad.
        settings: what the results depend on (checkpoint fingerprint, data options...), stored in the
            manifest and compared on ``resume`` (by rank 0 only); the protocol is added to it.
        protocol: the analysis settings (:class:`~slm_transformerlens.lens.LensProtocol`); with
            ``swapped_audio`` rank 0 runs the swapped-audio control over the analysed items after the
            merge (a second forward pass; not resumed; skipped above ``max_swap_words`` spoken words).
        make_lens: ``model -> lens`` (``None``: the logit lens).
        device: the model's device (under ``torchrun`` with CUDA: ``cuda:LOCAL_RANK``).
        split: ``load_model`` splits the model over this machine's devices (a ``device_map``): no device is
            pinned per rank, and ``torchrun`` must start one process per machine.
        batch_tokens: token budget of a forward pass (:func:`~slm_transformerlens.lens.transcription_table`).
        part_size: items per part (a new run; a resumed run keeps its manifest's).
        resume: skip the finished parts of the run in ``out_dir`` (same settings required).
        overwrite: clear a run in ``out_dir`` first.
        on_error: ``"stop"`` (default) or ``"skip"`` a bad item; either way it is named, and finished parts
            are kept.
        charts, png, title: of the report.
        progress: rank 0's progress bar (it counts every rank's finished parts as they are logged).
        on_progress: ``(done, total) -> None``, called on rank 0 whenever more items are done (from a
            background thread too, under ``torchrun``).
        launch: the process's rank (default: from the environment, :func:`launch_from_environment`).

    Returns:
        The report (rank 0), or ``None`` on the other ranks. Failed items are listed in
        ``failed_items.csv`` and in ``ReportFiles.files["failed_items"]``.

    Raises:
        RunError / OutputError: the folder or manifest is refused (before any compute), or a bad item with
            ``on_error="stop"`` (on every rank: the first failure is named).
    """
    if on_error not in ON_ERROR:
        raise RunError(f"on_error={on_error!r}; choose one of {list(ON_ERROR)}")
    if part_size < 1:
        raise RunError(f"part_size={part_size}: a part needs at least one item")
    if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1:
        raise RunError(
            f"batch_tokens={batch_tokens!r}: a forward pass needs a budget of at least 1 token "
            "(e.g. batch_tokens=4096)"
        )
    _check_items(items)
    launch = launch or launch_from_environment()
    owns_group = launch.distributed and not _group_initialized()
    device = _init_distributed(launch, device, split)
    try:  # every collective of the run happens in here
        out = Path(out_dir)
        settings = _plain({**settings, "protocol": protocol})
        plan: dict[str, Any] = {}
        if launch.main:
            try:
                claim_output_folder(out, resume=resume, overwrite=overwrite)
                size, todo, attempt = _start(out, items, settings, part_size, resume)
                plan = {"part_size": size, "todo": todo, "attempt": attempt}
            except (SLMError, OSError) as error:
                plan = {"error": str(error), "kind": type(error).__name__}
        plan = _collective(launch, plan, source_only=True)[0]
        if "error" in plan:
            raise (OutputError if plan["kind"] == "OutputError" else RunError)(plan["error"])
        size, todo, attempt = int(plan["part_size"]), list(plan["todo"]), int(plan["attempt"])
        mine = [todo[i] for i in shard(len(todo), launch.rank, launch.world_size)]
        total = sum(len(range(p * size, min((p + 1) * size, len(items)))) for p in todo)
        bar = (
            _Progress(out, total, progress, launch.world_size, on_progress=on_progress)
            if launch.main
            else None
        )
        status: str | None = None
        started = False
        model = None
        try:
            if mine or launch.main:
                model = load_model(device)
            lens = make_lens(model) if model is not None else None

            def table_of(utterances: Sequence[Any]) -> pd.DataFrame:
                return protocol.transcription_table(
                    model, utterances, lens=lens, batch_tokens=batch_tokens, progress=False
                )

            for part in mine:
                started = True
                indices = range(part * size, min((part + 1) * size, len(items)))
                part_items = [(i, items[i]) for i in indices]
                table, failed = _analyse_part(
                    part_items, lambda path: read_item(model, path), table_of, on_error
                )
                bad = {f["id"] for f in failed}
                done = [item.id for _, item in part_items if item.id not in bad]
                _write_part(out, launch, part, table, done, failed, attempt)
                if bar is not None:
                    bar.refresh()
        except (SLMError, OSError) as error:
            status = f"rank {launch.rank}: {error}" if launch.distributed else str(error)
        except BaseException:
            if bar is not None:
                bar.close()
            raise
        gathered = _collective(launch, (status, started), source_only=False)  # rank 0's bar still moves
        statuses = [s for s, _ in gathered if s]
        if bar is not None:
            bar.close()
    finally:
        # A rank that exits with its process group alive can abort in gloo's teardown ("terminate called
        # without an active exception", SIGABRT) after its work is done: end the group this run started.
        if owns_group:
            _end_group()
    if statuses:
        raise RunError(statuses[0])
    if not launch.main:
        return None
    table, failed = _merge(out, todo)
    if table.empty:
        raise RunError(
            "no word of the requested modalities was found in the items that could be read"
            + (f"; {len(failed)} failed (see {out / 'failed_items.csv'})" if failed else "")
        )
    swapped, swapped_note = _swapped_audio(model, items, table, read_item, protocol, make_lens, batch_tokens)
    first = int(table["utterance"].min())
    before = _files(out)
    result: ReportFiles | None = None
    try:
        result = write_lens_report(
            model,
            [read_item(model, items[first].path)],
            out,
            lens=make_lens(model),
            charts=charts,
            png=png,
            title=title,
            progress=False,
            protocol=protocol,
            table=table,
            n_utterances=int(table["utterance"].nunique()),
            notes=[f"{len(failed)} item(s) could not be analysed: see `failed_items.csv`."] if failed else (),
            swapped=swapped,
            swapped_note=swapped_note,
        )
        failed_path = out / "failed_items.csv"
        pd.DataFrame(failed, columns=["id", "error"]).to_csv(failed_path, index=False)
        result.files["failed_items"] = failed_path
    finally:
        _record_written(out, before, result)  # what --overwrite may remove later
    result.files["manifest"] = out / MANIFEST
    return result
