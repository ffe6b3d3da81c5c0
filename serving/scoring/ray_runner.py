"""Scale-out scoring on Ray Data: the same Predictor as an actor pool, the same shards.

The pending inputs become a Ray dataset; ``map_batches`` runs :class:`Predictor` in a pool of
actors (each reads, decodes, infers and decodes outputs for its batches, with a GPU each when
the cluster has GPUs); the driver receives the rows and commits them with the same shard sink
as the local path, so the output layout, atomic commits and resumption are identical.
Ray is an optional extra (``pip install 'polyhead[ray]'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from serving.errors import BackendUnavailable, BadRequest
from serving.scoring.output import OutputDir, Shard
from serving.scoring.predictor import ModelRef, Predictor, ScoreOptions
from serving.scoring.progress import Progress
from serving.scoring.sources import InputList

log = logging.getLogger("polyhead.score")


#: The environment of a local Ray that polyhead starts for itself, a private engine of this
#: machine: every Ray process on loopback (Ray otherwise swaps 127.0.0.1 for the machine's
#: network address, unless told this is a single-machine cluster, a setting it reads at import),
#: no usage reporting, and no HTTP beyond this machine (at start Ray's dashboard probes cloud
#: metadata endpoints to guess the cloud it runs on). Ray's processes inherit this at start;
#: the driver's own environment is restored right after.
LOCAL_RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost,::1",
    "no_proxy": "127.0.0.1,localhost,::1",
}


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _connect(address: str) -> Any:
    with _environment(LOCAL_RAY_ENV) if address == "local" else contextlib.nullcontext():
        try:
            import ray
        except ImportError as e:
            raise BadRequest("--ray needs Ray: pip install 'polyhead[ray]'") from e
        if ray.is_initialized():
            return ray
        try:
            if address == "local":
                ray.init(
                    _node_ip_address="127.0.0.1",
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, TimeoutError, ValueError) as e:
            raise BackendUnavailable(f"cannot connect to Ray at {address}: {e}") from e
    return ray


def run_ray(
    ref: ModelRef,
    options: ScoreOptions,
    inputs: InputList,
    pending: list[Shard],
    out: OutputDir,
    digest: str,
    progress: Progress,
    batch_size: int,
    actors: int,
    address: str,
    gpus_per_actor: float | None,
) -> str:
    """Score ``pending`` on Ray (``address`` "local" starts one here); returns the device."""
    from serving.scoring.pipeline import ShardSink

    ray = _connect(address)
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    indices = [i for s in pending for i in range(s.start, s.stop)]
    table = pa.table(
        {
            "index": pa.array(indices, pa.int64()),
            "id": [inputs.ids[i] for i in indices],
            "path": [inputs.paths[i] for i in indices],
        }
    )
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards complete one after another
    ds = ray.data.from_arrow(table).map_batches(
        Predictor,
        fn_constructor_args=(ref, options, 1),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=gpus_per_actor,
        num_cpus=1,
    )
    # the schema the driver writes: the same layout as the local path, made without a model
    schema = _layout_schema(ref, options)
    sink = ShardSink(out, pending, schema, digest, progress)
    log.info("scoring %d inputs on Ray with %d actors", len(indices), actors)
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        sink.add(batch)
    if not sink.finished():
        raise RuntimeError("Ray returned fewer rows than it was given")
    return f"ray ({actors} actors, {gpus_per_actor:g} GPU each)"


def _layout_schema(ref: ModelRef, options: ScoreOptions) -> pa.Schema:
    from serving.scoring.columns import RowLayout
    from serving.scoring.predictor import load_manifest
    from serving.service import select_tasks

    manifest = load_manifest(ref)
    return RowLayout(manifest, select_tasks(manifest, options.tasks), options.decode).schema
