"""Where the heavy work runs: in this process (`local`, the default) or on a Ray cluster
(`ray`). The stages say *what* runs in parallel through three calls; the engine says
*where*:

    map(fn, items)            one stateless task per item; results in item order
    pool(make, items, gpus)   stateful workers (a model loaded once per worker) over the
                              items, as Ray Data `map_batches` on an actor pool; results in
                              completion order
    stream(gen, items)        one task per item that yields its results as it goes (files
                              read in parallel, consumed in order by one writer)

Local needs nothing installed and runs each call as a plain loop. Ray is the optional
extra `ray` (`pip install 'curate[ray]'`), imported only when asked for. On a cluster
every node needs curate installed and the store on a shared file system: workers read
and commit their own shards, and the driver holds the store's lock and writes the
catalog.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from curate.errors import CurateError

ENGINES = ("local", "ray")
# quiet: curate reports progress and errors itself (worker errors are raised here)
_RAY_INIT = {"include_dashboard": False, "log_to_driver": False,
             "logging_level": logging.ERROR}
RAY_INSTALL = "pip install 'curate[ray]'  (ray[data] and prefect-ray)"


@dataclass
class Engine:
    """The local engine: every call is a loop in this process."""

    name = "local"
    workers: int | None = None  # parallel workers; local runs one

    def parallelism(self) -> int:
        return 1

    def map(self, fn: Callable[[Any], Any], items: Iterable) -> list:
        return [fn(item) for item in items]

    def pool(self, make: Callable[[], Callable[[Any], Any]], items: list, gpus: bool = False
             ) -> Iterator:
        work = make()
        for item in items:
            yield work(item)

    def stream(self, gen: Callable[[Any], Iterator], items: list, ahead: int = 0
               ) -> Iterator[Iterator]:
        for item in items:
            yield gen(item)

    def task_runner(self):
        """The Prefect task runner for flows on this engine (None: Prefect's default)."""
        return None

    def describe(self) -> str:
        return "local (this process)"


@dataclass
class RayEngine(Engine):
    """Ray: tasks and actor pools on the cluster at `address` (None: the one RAY_ADDRESS
    names, else a local Ray instance started for this process)."""

    name = "ray"
    address: str | None = None
    workers: int | None = None  # default: one per CPU (CPU work) or per GPU (models)
    cpus_per_worker: float = 1.0

    def __post_init__(self):
        self._ray = _import_ray()
        self._started = False

    def start(self):
        ray = self._ray
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, **_RAY_INIT)
            except ConnectionError as e:
                raise CurateError(f"cannot reach the Ray cluster at {self.address}: {e}\n  fix: "
                                  "start it (`ray start --head`) or check --address") from e
            self._started = True
        _quiet_ray_data()
        return ray

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False

    def resources(self) -> dict[str, float]:
        return self.start().cluster_resources()

    def gpus(self) -> int:
        return int(self.resources().get("GPU", 0))

    def parallelism(self, gpus: bool = False) -> int:
        if self.workers:
            return self.workers
        res = self.resources()
        if gpus and res.get("GPU", 0) >= 1:
            return int(res["GPU"])
        return max(1, int(res.get("CPU", 1) // self.cpus_per_worker))

    def map(self, fn, items):
        ray = self.start()
        remote = ray.remote(num_cpus=self.cpus_per_worker)(_call)
        with _worker_errors():
            return ray.get([remote.remote(fn, item) for item in items])

    def pool(self, make, items, gpus=False):
        """Ray Data over the items: `map_batches` with one item per batch on an actor
        pool of `make()` workers, each holding one GPU when the cluster has GPUs and the
        work asks for them. A worker that dies has its item retried on a new one."""
        ray = self.start()
        import ray.data  # noqa: F811  (the submodule, on the started package)

        if not items:
            return
        use_gpu = gpus and self.gpus() > 0
        # one GPU per worker: asking for more workers than GPUs would wait forever
        size = min(self.parallelism(gpus=use_gpu), len(items),
                   self.gpus() if use_gpu else len(items))
        ds = ray.data.from_items([{"item": i} for i in range(len(items))],
                                 override_num_blocks=len(items))

        class Worker(_PoolWorker):  # the work travels with the class, not as actor args
            def __init__(self):
                super().__init__(make, items)

        out = ds.map_batches(
            Worker, batch_size=1,
            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=size),
            num_gpus=1 if use_gpu else 0, num_cpus=0 if use_gpu else self.cpus_per_worker,
            )
        with _worker_errors():
            for row in out.iter_rows():
                yield row["result"]

    def stream(self, gen, items, ahead=0):
        """Each item's generator runs as a Ray task that streams its results back; up to
        `ahead` items (default: the cluster's CPUs) run ahead of the one being consumed,
        each holding at most a few results unconsumed."""
        ray = self.start()
        remote = ray.remote(num_cpus=self.cpus_per_worker, num_returns="streaming",
                            _generator_backpressure_num_objects=4)(_generate)
        ahead = ahead or self.parallelism()
        running: list = []
        items = list(items)
        nxt = 0
        try:
            for _ in range(len(items)):
                while nxt < len(items) and len(running) <= ahead:
                    running.append(remote.remote(gen, items[nxt]))
                    nxt += 1
                yield _results(ray, running.pop(0))
        finally:
            for refs in running:
                ray.cancel(refs)

    def task_runner(self):
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as e:
            raise CurateError(f"the ray engine in flows needs prefect-ray\n  fix: "
                              f"{RAY_INSTALL}") from e
        address = self.address or os.environ.get("RAY_ADDRESS")
        # task logs reach Prefect's API already: Ray need not echo them
        return RayTaskRunner(address=address, init_kwargs=_RAY_INIT)

    def describe(self) -> str:
        res = self.resources()
        return (f"ray ({self.address or 'local instance'}: {int(res.get('CPU', 0))} CPUs, "
                f"{int(res.get('GPU', 0))} GPUs)")


def get_engine(name: str | Engine | None = "local", address: str | None = None,
               workers: int | None = None) -> Engine:
    """An engine by name: `local` (default) or `ray` (at `address`, with `workers`)."""
    if isinstance(name, Engine):
        return name
    name = (name or "local").lower()
    if name == "local":
        if address:
            raise CurateError("--address applies to the ray engine\n  fix: add --engine ray")
        return Engine(workers=workers)
    if name == "ray":
        return RayEngine(address=address, workers=workers)
    raise CurateError(f"unknown engine {name!r}\n  fix: use one of {', '.join(ENGINES)}")


def engine_from_spec(spec: str | dict | None) -> Engine:
    """The flow config's `engine:` value: a name, or {name, address, workers}."""
    if isinstance(spec, dict):
        wrong = set(spec) - {"name", "address", "workers"}
        if wrong:
            raise CurateError(f"engine: unknown key(s) {', '.join(sorted(wrong))}\n  fix: the "
                              "keys are name (local or ray), address, workers")
        return get_engine(spec.get("name", "local"), spec.get("address"), spec.get("workers"))
    return get_engine(spec)


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise CurateError(f"the ray engine needs Ray, which is not installed\n  fix: "
                          f"{RAY_INSTALL}") from e
    return ray


def _quiet_ray_data() -> None:
    """Ray Data's progress bars and per-dataset logs would bury curate's own output."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if hasattr(ctx, "enable_rich_progress_bars"):
        ctx.enable_rich_progress_bars = False
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _results(ray, refs) -> Iterator:
    with _worker_errors():
        for ref in refs:
            yield ray.get(ref)


@contextlib.contextmanager
def _worker_errors():
    """A curate error raised on a worker is raised here as itself (a bad file names the
    file and the fix, as on the local engine), not inside Ray's task error."""
    from ray.exceptions import RayError

    try:
        yield
    except Exception as e:
        cause: BaseException | None = e
        while cause is not None and (isinstance(cause, RayError) or
                                     not isinstance(cause, CurateError)):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if cause is None:
            raise
        raise cause from None


def _call(fn, item):
    return fn(item)


def _generate(gen, item):
    yield from gen(item)


class _PoolWorker:
    """One actor of a pool: builds its worker once (loads the model), then runs it on
    each item index it is given."""

    def __init__(self, make, items):
        self.work = make()
        self.items = items

    def __call__(self, batch):
        import pyarrow as pa

        results = [self.work(self.items[i]) for i in batch["item"].to_pylist()]
        return pa.table({"result": pa.array(results)})
