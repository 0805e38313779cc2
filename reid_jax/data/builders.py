"""TFDS builders for video re-id trees: frames as array_record records of their image bytes.

Datasets (`DATASETS`): `mars`, `synth_mars` (MARS layout), `duke_video` (DukeMTMC-VideoReID),
`ilidsvid` and `prid2011`. Each builder reads its manual tree with a reader function into
TrackletTables; record i of a split is frame i of its table's `paths` (tracklet-contiguous,
frames in temporal order), and the tracklet index travels with the prepared data in its
metadata.json, so training needs only the prepared directory. The `jpeg` feature holds each
file's ORIGINAL bytes: JPEG for MARS and Duke, PNG for iLIDS-VID and PRID-2011
(`transforms.decode_jpeg` reads both).

iLIDS-VID and PRID-2011 are evaluated over 10 trials (train/test halves of the identities): their
single TFDS split `tracklets.POOL` holds every sequence, the metadata holds all trials, and
`load_split(..., trial=N)` selects the train or test tracklets of trial N, so one prepared
dataset serves all trials. Works without TensorFlow: the stock TFDS writer spills splits over
1 GB through `tf.io.gfile`, so `_download_and_prepare` streams records to array_record itself.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import hashlib
import inspect
import multiprocessing
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from array_record.python import array_record_module
from etils import epath
from tensorflow_datasets.core import example_serializer

from reid_jax.data import duke_video, ilidsvid, mars, prid2011, tracklets
from reid_jax.data.tracklets import TrackletIndex, Tree

FORMAT_VERSION = 2  # 2: records carry their file name
MAX_SHARD_BYTES = 256 << 20  # start a new array_record shard past this many record bytes
CHUNK_FRAMES = 512  # frames per serialization task
AUTO_WORKERS_MIN_FRAMES = 20_000  # below this, num_workers=None serializes in-process
# One record per group for random access; JPEG does not compress, and skipping array_record's
# default zstd makes writing ~3x and every random read cheaper.
WRITER_OPTIONS = "group_size:1,uncompressed"

MANUAL_DOWNLOAD_INSTRUCTIONS = (
    """\
Put the MARS release in the manual dir (e.g. `data/manual/mars/`) as:
  bbox_train/<pid4>/<pid4>C<cam>T<tracklet4>F<frame3>.jpg   (unzipped bbox_train.zip)
  bbox_test/<pid4>/...                                       (unzipped bbox_test.zip; junk in 00-1/)
  info/train_name.txt, info/test_name.txt, info/tracks_train_info.mat,
  info/tracks_test_info.mat, info/query_IDX.mat
"""
    + mars.GET_MARS
)


def _features() -> tfds.features.FeaturesDict:
    """Per-frame features; `jpeg` holds the file's original bytes (JPEG or PNG), undecoded."""
    return tfds.features.FeaturesDict(
        {
            "jpeg": tfds.features.Tensor(shape=(), dtype=np.object_),
            "name": tfds.features.Tensor(shape=(), dtype=np.object_),
            "pid": tfds.features.Scalar(dtype=np.int32),
            "camid": tfds.features.Scalar(dtype=np.int32),
            "tracklet": tfds.features.Scalar(dtype=np.int32),
            "frame": tfds.features.Scalar(dtype=np.int32),
        }
    )


@functools.cache
def _codec() -> tuple[tfds.features.FeaturesDict, Any]:
    features = _features()
    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    return features, serializer


def _frame_columns(table: mars.TrackletTable) -> dict[str, np.ndarray]:
    """Per-frame pid, camid, tracklet row and 0-based position within the tracklet."""
    rows = np.repeat(np.arange(len(table.start)), table.length)
    return {
        "pid": table.pid[rows],
        "camid": table.camid[rows],
        "tracklet": rows,
        "frame": np.arange(len(rows)) - table.start[rows],
    }


def _frame_examples(root: str, paths: list[str], cols: dict[str, np.ndarray]) -> Iterator[dict]:
    """Yields one feature dict per frame, reading the image bytes unchanged."""
    for i, rel in enumerate(paths):
        with open(os.path.join(root, rel), "rb") as f:
            jpeg = f.read()
        yield {"jpeg": jpeg, "name": rel.encode(), **{k: int(v[i]) for k, v in cols.items()}}


def _serialize_chunk(task: tuple[str, list[str], dict[str, np.ndarray]]) -> list[bytes]:
    """Reads and serializes one chunk of frames; module-level so worker processes can run it."""
    features, serializer = _codec()
    return [
        serializer.serialize_example(features.encode_example(ex)) for ex in _frame_examples(*task)
    ]


def _worker_pool(num_workers: int) -> contextlib.AbstractContextManager:
    """A spawn-context process pool (safe even with JAX threads running), or None if 0."""
    if num_workers <= 0:
        return contextlib.nullcontext()
    ctx = multiprocessing.get_context("spawn")
    return concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=ctx)


def _serialized_records(
    root: str, table: mars.TrackletTable, pool: concurrent.futures.Executor | None, ahead: int
) -> Iterator[bytes]:
    """Serialized records in frame order; chunks run on `pool`, at most `ahead` in flight."""
    cols = _frame_columns(table)
    chunks = (slice(lo, lo + CHUNK_FRAMES) for lo in range(0, len(table.paths), CHUNK_FRAMES))
    tasks = ((root, table.paths[c], {k: v[c] for k, v in cols.items()}) for c in chunks)
    if pool is None:
        for task in tasks:
            yield from _serialize_chunk(task)
        return
    window: collections.deque = collections.deque()
    for task in tasks:  # bounded look-ahead keeps memory flat and preserves order
        window.append(pool.submit(_serialize_chunk, task))
        if len(window) >= ahead:
            yield from window.popleft().result()
    while window:
        yield from window.popleft().result()


def fingerprint(manual_dir: str | Path) -> str:
    """SHA-256 of the five MARS info files (names, sizes, bytes): identifies a manual tree."""
    info_dir = Path(manual_dir) / "info"
    h = hashlib.sha256(f"mars-format-v{FORMAT_VERSION}".encode())
    for fname in sorted([*mars.INFO_MATS.values(), *mars.NAME_FILES.values()]):
        path = info_dir / fname
        if not path.is_file():
            raise mars.missing_info_error(path)
        data = path.read_bytes()
        h.update(f"{fname}:{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()


class _TrackletBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Builds one TFDS split per table that `read_tree` finds in the manual dir."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Image bytes + pid/camid/tracklet/frame, tracklet index in metadata."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    DESCRIPTION = "Video person re-identification frames."
    FINGERPRINT_OF = "frame lists or split files"  # what a fingerprint mismatch means
    # Evaluation protocols (reid_jax.evaluation.metrics) that are this dataset's: the query /
    # gallery scoring of the field's code ("legacy"); MARS-format data adds its own two.
    PROTOCOLS: tuple[str, ...] = ("legacy",)
    read_tree: Callable[[Path], Tree]  # reads a manual dir; each dataset sets a staticmethod
    num_workers = 0  # serialization processes; prepare() sets it per build
    _tree_cache: tuple[Path, Tree] | None = None

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This module's file. TFDS's own lookup needs the missing `importlib_resources`
        on Python >= 3.9 for builders inside a package (tensorflow/datasets#11212)."""
        return epath.Path(inspect.getfile(cls))

    def tree(self, root: Path) -> Tree:
        """The manual tree at `root`, read (and validated) once per builder instance."""
        root = Path(root)
        if self._tree_cache is None or self._tree_cache[0] != root:
            self._tree_cache = (root, self.read_tree(root))
        return self._tree_cache[1]

    def manual_fingerprint(self, root: Path) -> str:
        """Identifies the manual tree, to refuse mixing prepared data with another tree."""
        return tracklets.tree_fingerprint(self.tree(root), FORMAT_VERSION)

    def manual_num_frames(self, root: Path) -> int:
        """Frames the build will write (sizes the worker pool)."""
        return sum(len(t.paths) for t in self.tree(root).tables.values())

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo(builder=...) directly: dataset_info_from_configs() expects a package dir.
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=_features(),
            disable_shuffling=True,  # record order = table order
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        root = dl_manager.manual_dir
        return {s: self._generate_examples(root, t) for s, t in self.tree(root).tables.items()}

    def _generate_examples(self, root: Path, table: mars.TrackletTable) -> Iterator[tuple]:
        """TFDS generator contract (integer keys = frame order); prepare() streams instead."""
        yield from enumerate(_frame_examples(str(root), table.paths, _frame_columns(table)))

    def _write_split(
        self,
        split: str,
        root: Path,
        table: mars.TrackletTable,
        pool: concurrent.futures.Executor | None,
    ) -> tfds.core.SplitInfo:
        """Streams one split into size-capped array_record shards; returns its SplitInfo."""
        template = self._get_filename_template(split)
        part_paths, lengths, sizes = [], [], []
        writer = None
        ahead = 2 * self.num_workers
        for record in _serialized_records(str(root), table, pool, ahead):
            if writer is None or sizes[-1] >= MAX_SHARD_BYTES:
                if writer is not None:
                    writer.close()
                part_paths.append(template.data_dir / f"{split}.part{len(part_paths):05d}")
                writer = array_record_module.ArrayRecordWriter(str(part_paths[-1]), WRITER_OPTIONS)
                lengths.append(0)
                sizes.append(0)
            writer.write(record)
            lengths[-1] += 1
            sizes[-1] += len(record)
        writer.close()
        for i, part in enumerate(part_paths):
            part.rename(template.sharded_filepath(shard_index=i, num_shards=len(part_paths)))
        logging.info("%s/%s: %d frames in %d shards", self.name, split, sum(lengths), len(lengths))
        return tfds.core.SplitInfo(
            name=split, shard_lengths=lengths, num_bytes=sum(sizes), filename_template=template
        )

    def _download_and_prepare(self, dl_manager, download_config) -> None:
        del download_config  # nothing to download: the data is in the manual dir
        root = Path(dl_manager.manual_dir)
        tree = self.tree(root)  # validate before writing
        with _worker_pool(self.num_workers) as pool:
            infos = [self._write_split(s, root, t, pool) for s, t in tree.tables.items()]
        self.info.set_splits(tfds.core.SplitDict(infos))
        self.info.metadata.update(
            format_version=FORMAT_VERSION,
            fingerprint=self.manual_fingerprint(root),
            manual_dir=str(root),
            tracklets={s: tracklets.table_json(t) for s, t in tree.tables.items()},
        )
        if tree.trials is not None:
            self.info.metadata["trials"] = tree.trials


class _MarsFormatBuilder(_TrackletBuilder, skip_registration=True):
    """Builds `train`/`test` splits of a MARS-format tree found in the manual dir."""

    DESCRIPTION = "MARS video person re-identification frames."
    FINGERPRINT_OF = "info files"
    # MARS's MATLAB code ("official") and the video papers' test() that appends the queries to
    # the gallery ("appended", AP3D / PSTA: MARS only), beside "legacy".
    PROTOCOLS = ("official", "legacy", "appended")
    read_tree = staticmethod(tracklets.read_mars)

    def manual_fingerprint(self, root: Path) -> str:
        """The info files' fingerprint: cheap, and stable when only frames move."""
        return fingerprint(root)

    def manual_num_frames(self, root: Path) -> int:
        """Lines of the two name files (no frame listing needed)."""
        files = [Path(root) / "info" / f for f in mars.NAME_FILES.values()]
        return sum(len(f.read_bytes().splitlines()) for f in files)


class MarsBuilder(_MarsFormatBuilder):
    """The real MARS dataset (manual download)."""

    name = "mars"


class SynthMarsBuilder(_MarsFormatBuilder):
    """A synthetic MARS-format tree (reid_jax.data.synth_mars) in the manual dir."""

    name = "synth_mars"
    DESCRIPTION = "Synthetic MARS-format video re-id frames."
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Generate a SynthMARS tree (reid_jax.data.synth_mars) and pass its root as manual_dir; "
        "it has the MARS layout:\n" + MANUAL_DOWNLOAD_INSTRUCTIONS
    )


class IlidsVidBuilder(_TrackletBuilder):
    """iLIDS-VID: PNG sequences of 300 persons in 2 cameras, 10 trials (split `POOL`)."""

    name = "ilidsvid"
    DESCRIPTION = "iLIDS-VID video person re-identification sequences (PNG)."
    MANUAL_DOWNLOAD_INSTRUCTIONS = ilidsvid.MANUAL_INSTRUCTIONS
    read_tree = staticmethod(tracklets.read_ilidsvid)


class Prid2011Builder(_TrackletBuilder):
    """PRID-2011 multi-shot: PNG sequences, persons of both cameras, 10 trials (split `POOL`)."""

    name = "prid2011"
    DESCRIPTION = "PRID-2011 multi-shot video person re-identification sequences (PNG)."
    MANUAL_DOWNLOAD_INSTRUCTIONS = prid2011.MANUAL_INSTRUCTIONS
    read_tree = staticmethod(tracklets.read_prid2011)


class DukeVideoBuilder(_TrackletBuilder):
    """DukeMTMC-VideoReID: `train` and `test` (query then gallery tracklets) splits."""

    name = "duke_video"
    DESCRIPTION = "DukeMTMC-VideoReID video person re-identification tracklets."
    MANUAL_DOWNLOAD_INSTRUCTIONS = duke_video.MANUAL_INSTRUCTIONS
    read_tree = staticmethod(tracklets.read_duke_video)


DATASETS: dict[str, type] = {
    "mars": MarsBuilder,
    "synth_mars": SynthMarsBuilder,
    "ilidsvid": IlidsVidBuilder,
    "prid2011": Prid2011Builder,
    "duke_video": DukeVideoBuilder,
}


def _builder(name: str, data_dir: str | Path, **kwargs: Any) -> _TrackletBuilder:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name](data_dir=os.fspath(data_dir), file_format="array_record", **kwargs)


def prepare(
    name: str, data_dir: str | Path, manual_dir: str | Path, num_workers: int | None = None
) -> None:
    """Builds dataset `name` from the tree in manual_dir into data_dir, unless already prepared.

    num_workers: serialization processes (0: in-process; None: in-process for small trees or
    few cores, else up to 8). Workers are spawned, so a calling script needs an
    `if __name__ == "__main__":` guard. Raises ValueError if the prepared data was built from
    a different tree (MARS: other info files; others: other frame lists or split files).
    """
    manual_dir = Path(manual_dir).absolute()
    builder = _builder(name, data_dir)
    if not manual_dir.is_dir():
        raise FileNotFoundError(
            f"manual dir {manual_dir} for dataset {name!r} does not exist.\n"
            + builder.MANUAL_DOWNLOAD_INSTRUCTIONS
        )
    fp = builder.manual_fingerprint(manual_dir)
    if builder.is_prepared():
        meta = builder.info.metadata or {}
        if meta.get("fingerprint") != fp:
            raise ValueError(
                f"dataset {name!r} at {builder.data_path} was prepared from manual dir "
                f"{meta.get('manual_dir')!r}, whose {builder.FINGERPRINT_OF} differ from those "
                f"in {manual_dir}; delete {builder.data_path} to rebuild, or use another data_dir"
            )
        return
    if num_workers is None:
        frames = builder.manual_num_frames(manual_dir)
        num_workers = min(8, (os.cpu_count() or 1) - 1)  # leave a core to the writer
        if frames < AUTO_WORKERS_MIN_FRAMES or num_workers < 2:
            num_workers = 0
    builder.num_workers = num_workers
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir), try_download_gcs=False)
    builder.download_and_prepare(download_config=config, file_format="array_record")


def _prepared_meta(name: str, data_dir: str | Path) -> tuple[_TrackletBuilder, dict]:
    """The prepared builder and its metadata; errors say how to (re)prepare."""
    builder = _builder(name, data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"dataset {name!r} is not prepared at {builder.data_path}; run "
            f"reid_jax.data.builders.prepare({name!r}, {os.fspath(data_dir)!r}, manual_dir)"
        )
    meta = builder.info.metadata
    if meta is None or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{builder.data_path} has no tracklet index of format {FORMAT_VERSION} in its "
            "metadata.json; delete it and prepare again"
        )
    return builder, meta


def num_trials(name: str, data_dir: str | Path) -> int:
    """Number of train/test trials of a prepared dataset (1 for fixed splits like MARS)."""
    return tracklets.num_trials(_prepared_meta(name, data_dir)[1])


def load_split(
    name: str, data_dir: str | Path, split: str, trial: int = 0
) -> tuple[Any, TrackletIndex]:
    """Opens a prepared split: (random-access, picklable ArrayRecord data source, TrackletIndex).

    Datasets with trials (iLIDS-VID, PRID-2011): "train"/"test" are the train or test persons of
    trial `trial` (config.data.split), test queries are the camera-1 / cam_a sequences and the
    gallery the other camera's; the index addresses the one source of all sequences.
    Fixed-split datasets accept only trial 0.
    """
    builder, meta = _prepared_meta(name, data_dir)
    where = f"dataset {name!r} at {builder.data_path}"
    source_split, expected, index = tracklets.index_from_metadata(
        meta, split, trial, list(builder.info.splits), where
    )
    source = builder.as_data_source(split=source_split)
    if len(source) != expected:
        raise ValueError(
            f"{builder.data_path}: split {source_split!r} has {len(source)} records but its "
            f"tracklet index covers {expected} frames; delete it and prepare again"
        )
    return source, index


def record_name(record: dict[str, Any]) -> str:
    """The frame's original path relative to the dataset root, for messages about that frame."""
    name = record["name"]
    return name.decode() if isinstance(name, bytes) else str(name)
