"""One ``torchrun`` rank of the progress-bar test: ``run_analysis`` with read gates that order the ranks.

Rank 0 holds its first item until rank 1 has logged a part (then four polls more): its bar must show
rank 1's items before its own first part is done. Rank 1 holds its second-to-last part until rank 0 has
logged all of its parts, and its last part four polls more: rank 0's bar must move while it waits.
Rank 0 writes every ``on_progress`` call and its release time to ``RECORD`` (JSON).

    python -m torch.distributed.run --nproc-per-node 2 -m tests.scale.progress_worker CKPT DATA OUT RECORD
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import slm_transformerlens as slt
from slm_transformerlens.apps import run
from slm_transformerlens.lens import LensProtocol
from slm_transformerlens.speech.dataset import speech_file_reader

PART_SIZE = 2


def logged_parts(out: Path, rank: int) -> int:
    log = out / "parts" / f"done-rank{rank}.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def main(checkpoint: str, data: str, out_dir: str, record_path: str) -> None:
    launch = run.launch_from_environment()
    out = Path(out_dir)
    items = [run.RunItem(id=str(p), path=p) for p in sorted(Path(data).glob("*.json"))]
    n_parts = -(-len(items) // PART_SIZE)
    parts = {rank: list(run.shard(n_parts, rank, launch.world_size)) for rank in range(launch.world_size)}
    index = {item.path: i for i, item in enumerate(items)}
    calls: list[list[float]] = []
    released: dict[str, float] = {}
    readers: dict[int, object] = {}
    pause = 4 * run._POLL_SECONDS

    def read_item(model, path: Path):
        part = index[path] // PART_SIZE
        first_item = index[path] % PART_SIZE == 0
        if launch.rank == 0 and part == parts[0][0] and first_item and "first" not in released:
            wait_for(lambda: logged_parts(out, 1) >= 1, "rank 1's first part")
            time.sleep(pause)
            released["first"] = time.monotonic()
        if launch.rank == 1 and part == parts[1][-2] and first_item:
            wait_for(lambda: logged_parts(out, 0) == len(parts[0]), "rank 0's last part")
        if launch.rank == 1 and part == parts[1][-1] and first_item:
            time.sleep(pause)
        if id(model) not in readers:
            readers[id(model)] = speech_file_reader([item.path for item in items], model.speech_vocab)
        return readers[id(model)](path)

    run.run_analysis(
        items,
        out,
        load_model=lambda device: slt.load(checkpoint, progress=False),
        read_item=read_item,
        settings={"checkpoint": checkpoint},
        protocol=LensProtocol(),
        part_size=PART_SIZE,
        charts=False,
        png=False,
        progress=False,
        on_progress=lambda done, total: calls.append([done, total, time.monotonic()]),
        launch=launch,
    )
    if launch.main:
        Path(record_path).write_text(
            json.dumps(
                {"calls": calls, "released": released["first"], "parts": parts, "part_size": PART_SIZE}
            )
        )


if __name__ == "__main__":
    main(*sys.argv[1:5])
