"""The training data: datasets from the config, and batches whose order a resumed run repeats.

Exact resume needs the batch of every step to be a pure function of (seed, step, rank). The order
of epoch e is `SeededSampler(n, seed).order(e)`; a step consumes `batch_size * world` samples of
it (all ranks together, rank r taking the r-th slice, like a DistributedSampler), and the stream's
state is just (epoch, position in the epoch). A partial last batch is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from scadm.data.folder import FaceFolder, SeededSampler, num_items
from scadm.data.synthetic import SyntheticFaces
from scadm.errors import InputError
from scadm.labels import CELEBAMASK_HQ, LabelSet
from scadm.train.config import DataConfig


class CachedDataset(Dataset):
    """Items of a deterministic dataset, kept in memory after their first read.

    Images and label maps are stored as uint8 when that is lossless (the procedural faces' are),
    else as they come. Each DataLoader worker would hold its own cache, so batches are read with
    num_workers 0; `fill` uses worker processes to render everything once up front instead.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.items: dict[int, dict] = {}

    def __len__(self) -> int:
        return num_items(self.dataset)

    @property
    def filled(self) -> bool:
        return len(self.items) == num_items(self.dataset)

    def fill(self, num_workers: int, progress: bool = True) -> None:
        """Read every item once, in `num_workers` processes: 20,000 procedural faces take over three
        minutes on one core, time a GPU would otherwise spend waiting in the first epoch."""
        loader = DataLoader(self.dataset, batch_size=64, num_workers=num_workers, collate_fn=list)
        index = 0
        for items in tqdm(loader, desc="rendering the training set", disable=not progress):
            for item in items:
                self._store(index, item)
                index += 1

    def _store(self, index: int, item: dict) -> None:
        item = dict(item)
        image, labels = item["image"], item["labels"]
        packed = ((image + 1.0) * 127.5).round().to(torch.uint8)
        if torch.equal(packed.float() / 127.5 - 1.0, image):
            item["image"] = packed
        if labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() <= 255:
            item["labels"] = labels.to(torch.uint8)
        self.items[index] = item

    def __getitem__(self, index: int) -> dict:
        if index not in self.items:
            self._store(index, self.dataset[index])
        item = dict(self.items[index])
        if item["image"].dtype == torch.uint8:
            item["image"] = item["image"].float() / 127.5 - 1.0
        if item["labels"].dtype == torch.uint8:
            item["labels"] = item["labels"].long()
        return item


def build_datasets(data: DataConfig) -> tuple[Dataset, Dataset, LabelSet]:
    """(training set, held-out set, class vocabulary) described by `data`."""
    if data.kind == "synthetic":
        train = SyntheticFaces(data.num, data.size, data.seed)
        holdout = SyntheticFaces(data.holdout_num, data.size, data.holdout_seed)
        if not data.cache:
            return train, holdout, CELEBAMASK_HQ
        cached = CachedDataset(train)
        if data.num_workers > 0:
            cached.fill(data.num_workers)
        return cached, holdout, CELEBAMASK_HQ
    if data.root is None:  # check_config refuses this first; a DataConfig built in code may not be checked
        raise InputError("data.root is required for data.kind 'folder'")
    kwargs: dict[str, Any] = dict(size=data.size, split=data.split, flip=data.flip, limit=data.limit)
    if data.labels:
        folder = FaceFolder.from_config(data.root, data.labels, **kwargs)
    else:
        folder = FaceFolder(data.root, **kwargs)
    if data.holdout_split is None:  # no held-out split: evaluate on the first training images
        return folder, folder, folder.label_set
    held_out = FaceFolder(data.root, size=data.size, label_set=folder.label_set, split=data.holdout_split)
    return folder, held_out, folder.label_set


def loader_workers(data: DataConfig) -> int:
    """Worker processes for the training batches: none for a cache (its workers only filled it)."""
    return 0 if data.kind == "synthetic" and data.cache else data.num_workers


def holdout_batch(dataset: Dataset, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `num` held-out items as (images (B,3,H,W), labels (B,H,W))."""
    items = [dataset[i] for i in range(min(num, num_items(dataset)))]
    return torch.stack([x["image"] for x in items]), torch.stack([x["labels"] for x in items])


class ShardedBatches(Sampler[list[int]]):
    """Index batches of one rank for one epoch, from position `start` (in samples, all ranks)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int):
        self.order_of = SeededSampler(n, seed)
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.epoch, self.start = 0, 0

    @property
    def per_step(self) -> int:
        return self.batch_size * self.world

    def set_epoch(self, epoch: int, start: int) -> None:
        self.order_of.set_epoch(epoch, start)
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[list[int]]:
        order, b = self.order_of.order(self.epoch), self.batch_size
        for p in range(self.start, len(order) - self.per_step + 1, self.per_step):
            yield order[p + self.rank * b : p + (self.rank + 1) * b]

    def __len__(self) -> int:
        return (self.order_of.n - self.start) // self.per_step


class BatchStream:
    """An endless stream of this rank's batches; `state()` / `load_state()` position it exactly."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int, rank: int = 0, world: int = 1):
        if num_items(dataset) < batch_size * world:
            raise InputError(
                f"data: {num_items(dataset)} training items, fewer than one step's "
                f"batch_size x processes = {batch_size * world}"
            )
        self.batches = ShardedBatches(num_items(dataset), batch_size, seed, rank, world)
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.batches,
            num_workers=num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=num_workers > 0,
        )
        self.epoch, self.position = 0, 0
        self._iter: Iterator[dict] | None = None

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._iter = None

    def next(self) -> dict:
        for _ in range(2):  # at most one epoch boundary per batch
            if self._iter is None:
                self.batches.set_epoch(self.epoch, self.position)
                self._iter = iter(self.loader)
            try:
                batch = next(self._iter)
            except StopIteration:
                self.epoch, self.position, self._iter = self.epoch + 1, 0, None
                continue
            self.position += self.batches.per_step
            return batch
        raise AssertionError("an epoch without a single batch")  # excluded by the length check
