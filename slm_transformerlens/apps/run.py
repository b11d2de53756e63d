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
import shutil
import threading
from collections.abc import Callable, Sequence
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
_FORMAT = 1


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
    """A sha256 of a checkpoint folder: every file's relative name and size, and the text of its small
    ``.json`` files (configs, tokenizer settings). Cheap (weights are not read)."""
    root = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root) if root.is_dir() else file.name}:{size}\n".encode())
        if file.suffix == ".json" and size < 1_000_000:
            digest.update(file.read_bytes())
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


def claim_output_folder(out_dir: str | Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Check ``out_dir`` before any compute: writable, and empty unless it holds a run to resume / overwrite.

    A folder holding a run (``manifest.json`` or ``report.md``) needs ``resume`` (go on with it) or
    ``overwrite`` (clear it); a folder of other files is never cleared.

    Raises:
        OutputError: not writable, or holding files that are not a run.
        RunError: another run without ``resume`` / ``overwrite``; both flags; ``resume`` without a manifest.
    """
    out = Path(out_dir)
    if resume and overwrite:
        raise RunError("--resume continues a run and --overwrite clears it: pass one of them")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    is_run = (out / MANIFEST).is_file() or (out / "report.md").is_file()
    if resume and not (out / MANIFEST).is_file():
        raise RunError(f"nothing to resume in {out}: it holds no {MANIFEST}; run without --resume")
    if entries and not is_run:
        raise OutputError(
            f"the output folder {out} holds files that are not an slm-lens run ({entries[0].name}, ...); "
            "pass out_dir= an empty or new folder"
        )
    if is_run and not (resume or overwrite):
        raise RunError(
            f"{out} holds another run; pass --resume to continue it, --overwrite to clear it, or another --out"
        )
    if overwrite:
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    prepare_output_folder(out)
    (out / PARTS).mkdir(exist_ok=True)
    return out


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
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def _start(
    out: Path, items: Sequence[RunItem], settings: dict[str, Any], part_size: int, resume: bool
) -> tuple[int, list[int]]:
    """Write (or check, on resume) the manifest; the part size and the parts still to do."""
    listed = [{"id": item.id, "path": str(item.path)} for item in items]
    if resume:
        manifest = _read_json(out / MANIFEST)
        changed = _differences(manifest.get("settings"), settings)
        if manifest.get("items") != listed:
            changed.append("the input items differ")
        if changed:
            raise RunError(
                f"{out / MANIFEST} was written by a run with other settings ({'; '.join(changed[:4])}); "
                "resume with the same settings, or pass --overwrite to start again"
            )
        part_size = int(manifest["part_size"])
    else:
        _write_json(
            out / MANIFEST, {"format": _FORMAT, "settings": settings, "part_size": part_size, "items": listed}
        )
    done = {int(record["part"]) for record in _done_log(out)}
    n_parts = -(-len(items) // part_size)
    return part_size, [p for p in range(n_parts) if p not in done]


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
    out: Path, launch: Launch, part: int, table: pd.DataFrame, items: list[str], failed: list
) -> None:
    """The part's parquet (written whole, then renamed), then its line in this rank's log."""
    record: dict[str, Any] = {"part": part, "items": items, "failed": failed, "file": None}
    if not table.empty:
        name = f"{PARTS}/part-{part:05d}.parquet"
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


def _merge(out: Path, todo: Sequence[int]) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Every logged part's table, in item order, and every failed item.

    Raises:
        RunError: an item logged twice, or a part of this run (``todo``) that no rank logged in ``out``
            (on several nodes: a folder that is not shared).
    """
    records = _done_log(out)
    missing = sorted(set(todo) - {int(r["part"]) for r in records})
    if missing:
        raise RunError(
            f"parts {missing[:5]} were analysed but are not logged in {out / PARTS}: on several nodes --out "
            "must be one folder every node writes to (a shared file system)"
        )
    seen: set[str] = set()
    for record in records:
        ids = list(record["items"]) + [f["id"] for f in record.get("failed", [])]
        twice = seen.intersection(ids)
        if twice:
            raise RunError(f"items {sorted(twice)[:3]} are logged twice in {out / PARTS}; pass --overwrite")
        seen.update(ids)
    files = [out / r["file"] for r in sorted(records, key=lambda r: int(r["part"])) if r.get("file")]
    frames = [pd.read_parquet(f) for f in files]
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
            manifest and compared on ``resume``; the protocol is added to it.
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
    launch = launch or launch_from_environment()
    device = _init_distributed(launch, device, split)
    out = Path(out_dir)
    settings = _plain({**settings, "protocol": protocol})
    plan: dict[str, Any] = {}
    if launch.main:
        try:
            claim_output_folder(out, resume=resume, overwrite=overwrite)
            size, todo = _start(out, items, settings, part_size, resume)
            plan = {"part_size": size, "todo": todo}
        except (SLMError, OSError) as error:
            plan = {"error": str(error), "kind": type(error).__name__}
    plan = _collective(launch, plan, source_only=True)[0]
    if "error" in plan:
        raise (OutputError if plan["kind"] == "OutputError" else RunError)(plan["error"])
    size, todo = int(plan["part_size"]), list(plan["todo"])
    mine = [todo[i] for i in shard(len(todo), launch.rank, launch.world_size)]
    total = sum(len(range(p * size, min((p + 1) * size, len(items)))) for p in todo)
    bar = _Progress(out, total, progress, launch.world_size, on_progress=on_progress) if launch.main else None
    status: str | None = None
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
            indices = range(part * size, min((part + 1) * size, len(items)))
            part_items = [(i, items[i]) for i in indices]
            table, failed = _analyse_part(part_items, lambda path: read_item(model, path), table_of, on_error)
            bad = {f["id"] for f in failed}
            done = [item.id for _, item in part_items if item.id not in bad]
            _write_part(out, launch, part, table, done, failed)
            if bar is not None:
                bar.refresh()
    except (SLMError, OSError) as error:
        status = f"rank {launch.rank}: {error}" if launch.distributed else str(error)
    except BaseException:
        if bar is not None:
            bar.close()
        raise
    statuses = [s for s in _collective(launch, status, source_only=False) if s]  # rank 0's bar still moves
    if bar is not None:
        bar.close()
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
    result.files["manifest"] = out / MANIFEST
    return result
