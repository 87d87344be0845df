"""Read what an offline W&B run wrote: its `.wandb` file is a LevelDB-style log of protobuf records."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7  # checksum (4), length (2), chunk type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, position = [], b"", HEADER  # the file's own 7-byte header opens the first block
    while position + HEADER <= len(data):
        room = BLOCK - position % BLOCK
        if room < HEADER:  # the rest of a block is padding
            position += room
            continue
        length, kind = struct.unpack("<HB", data[position + 4 : position + HEADER])
        payload = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind == 0 and length == 0:  # zero padding
            continue
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def run_summary(path: Path) -> dict:
    """The run's identity, config, last summary, logged steps and exit code, from its records."""
    out = {"config": {}, "summary": {}, "history_steps": [], "exit_code": None, "preempting": False}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(group=run.run_group, job_type=run.job_type, name=run.display_name, tags=list(run.tags))
            out["config"].update({item.key: json.loads(item.value_json) for item in run.config.update})
        elif kind == "config":
            out["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            out["summary"].update({_key(item): json.loads(item.value_json) for item in record.summary.update})
        elif kind == "history":
            out["history_steps"].append(record.history.step.num)
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
        elif kind == "preempting":
            out["preempting"] = True
    return out


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key
