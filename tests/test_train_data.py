import torch
from torch.utils.data import Dataset

from scadm.data.folder import SeededSampler
from scadm.data.synthetic import SyntheticFaces
from scadm.train.data import BatchStream, CachedDataset


class Numbers(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"index": i}


def _take(stream, n):
    return [stream.next()["index"].tolist() for _ in range(n)]


def test_resumed_stream_continues_with_the_same_batches_across_epochs():
    full = _take(BatchStream(Numbers(), batch_size=3, seed=5, num_workers=0), 7)  # 3 batches per epoch
    first = BatchStream(Numbers(), batch_size=3, seed=5, num_workers=0)
    _take(first, 4)
    resumed = BatchStream(Numbers(), batch_size=3, seed=5, num_workers=0)
    resumed.load_state(first.state())
    assert _take(resumed, 3) == full[4:]
    assert first.state() == {"epoch": 1, "position": 3}


def test_ranks_split_each_step_into_disjoint_slices_of_the_global_order():
    ranks = [BatchStream(Numbers(), batch_size=2, seed=1, num_workers=0, rank=r, world=2) for r in (0, 1)]
    order = SeededSampler(10, 1).order(0)
    for step in range(2):
        together = [i for s in ranks for i in s.next()["index"].tolist()]
        assert together == order[4 * step : 4 * step + 4]


def test_cache_returns_bit_identical_items():
    faces = SyntheticFaces(2, 32, seed=3)
    cached = CachedDataset(faces)
    for _ in range(2):  # first read fills the cache, second reads from it
        item = cached[1]
        assert torch.equal(item["image"], faces[1]["image"]) and torch.equal(item["labels"], faces[1]["labels"])
        assert item["labels"].dtype == torch.int64
    assert cached.items[1]["image"].dtype == cached.items[1]["labels"].dtype == torch.uint8


def test_cache_filled_by_worker_processes_holds_every_item_in_order():
    faces = SyntheticFaces(3, 32, seed=4)
    cached = CachedDataset(faces)
    cached.fill(num_workers=2, progress=False)
    assert sorted(cached.items) == [0, 1, 2]
    for i in range(3):
        assert torch.equal(cached[i]["image"], faces[i]["image"]) and cached[i]["index"] == i
