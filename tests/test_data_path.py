"""The data path: loader workers change the speed, not the batches; uint8 batches are normalised on
the device exactly as the host used to; GPU-only options on a CPU are ignored with one notice."""
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from workers.augment import Normalize, train_transform
from workers.data import (BatchRing, EpochRows, SlotBatch, SplitDataset, loader_context, make_loader, stack_samples,
                          to_model_input)
from workers.evaluation import evaluate
from workers.shards import ShardedSplit
from workers.train_loop import start_iteration, train_one_epoch
from workers.trial_run import build_trial_run, device_options
from workers.trial_spec import TrainParams, TrialContext, TrialSpec
from tests.conftest import prepare_synthetic_in_process

HEIGHT, WIDTH = 16, 24


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return prepare_synthetic_in_process(tmp_path_factory.mktemp("data") / "synthetic", 16, (0.75, 0.25, 0.0),
                                        (HEIGHT, WIDTH))


def host_normalize(image: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """The normalisation the loader used to apply to each sample on the host."""
    scaled = (image.astype(np.float32) / 255.0 - np.asarray(mean, np.float32).reshape(1, 1, 3)) \
        / np.asarray(std, np.float32).reshape(1, 1, 3)
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))


def epoch_batches(dataset: SplitDataset, workers: int, epochs: tuple[int, ...]) -> list[tuple]:
    """Every batch of each epoch, from one loader read epoch after epoch as the train loop reads it."""
    rows = EpochRows(lambda epoch: np.random.default_rng(epoch).permutation(len(dataset)), 4)
    loader = make_loader(dataset, rows, 4, training=True, seed=5, workers=workers)
    return [batch for epoch in epochs for batch in loader.epoch(epoch)]


def test_loader_workers_give_the_same_augmented_batches(dataset_dir):
    split = ShardedSplit(dataset_dir, "train")
    dataset = SplitDataset(split, train_transform("strong", HEIGHT, WIDTH, 255),
                           Normalize(split.manifest["mean"], split.manifest["std"]), seed=7, iteration=2)
    alone, forked = epoch_batches(dataset, 0, (1, 2)), epoch_batches(dataset, 2, (1, 2))
    assert len(alone) == len(forked) == 2 * (len(dataset) // 4)
    for (images, masks), (forked_images, forked_masks) in zip(alone, forked):
        assert images.dtype == torch.uint8 and images.shape[1:] == (HEIGHT, WIDTH, 3)
        assert torch.equal(images, forked_images) and torch.equal(masks, forked_masks)
    assert not torch.equal(alone[0][0], epoch_batches(dataset, 0, (3,))[0][0])  # another epoch, another draw


def test_loader_workers_put_their_batches_into_the_ring(dataset_dir, monkeypatch):
    received = []
    take = BatchRing.take
    monkeypatch.setattr(BatchRing, "take", lambda ring, batch, pin: received.append(type(batch)) or take(ring, batch, pin))
    split = ShardedSplit(dataset_dir, "train")
    dataset = SplitDataset(split, train_transform("basic", HEIGHT, WIDTH, 255),
                           Normalize(split.manifest["mean"], split.manifest["std"]), seed=7)
    epoch_batches(dataset, 2, (1, 2))
    assert received and set(received) == {SlotBatch}  # none fell back to a shared-memory tensor


def test_a_worker_whose_next_slot_is_taken_sends_a_tensor_instead(dataset_dir):
    """One slot, and a worker four batches ahead: the batches behind the first cannot wait for it,
    and come as tensors; every batch still holds its own rows."""
    split = ShardedSplit(dataset_dir, "train")
    dataset = SplitDataset(split, None, Normalize(split.manifest["mean"], split.manifest["std"]))
    ring = BatchRing(1, 1, 2, dataset.sample_shapes)
    loader = DataLoader(dataset, batch_size=2, sampler=list(range(8)), num_workers=1, prefetch_factor=4,
                        collate_fn=ring.put, multiprocessing_context=loader_context())
    kinds, batches = [], []
    for index, batch in enumerate(loader):
        if index == 0:
            time.sleep(1.0)  # the worker fills its prefetch meanwhile
        kinds.append(type(batch))
        batches.append(ring.take(batch, pin_memory=False))
    assert kinds[0] is SlotBatch and tuple in kinds
    for index, (images, masks) in enumerate(batches):
        expected_images, expected_masks = stack_samples([dataset[row] for row in (2 * index, 2 * index + 1)])
        assert torch.equal(images, expected_images) and torch.equal(masks, expected_masks)


def test_an_epoch_key_reads_the_row_as_that_epochs_dataset(dataset_dir):
    split = ShardedSplit(dataset_dir, "train")
    dataset = SplitDataset(split, train_transform("basic", HEIGHT, WIDTH, 255),
                           Normalize(split.manifest["mean"], split.manifest["std"]), seed=3)
    image, mask = dataset[(4, 1)]
    expected_image, expected_mask = dataset.for_epoch(0, 4)[1]
    assert np.array_equal(image, expected_image) and np.array_equal(mask, expected_mask)


def test_device_normalisation_equals_the_host_one(dataset_dir):
    split = ShardedSplit(dataset_dir, "val")
    mean, std = split.manifest["mean"], split.manifest["std"]
    dataset = SplitDataset(split, None, Normalize(mean, std))
    images, _ = next(iter(make_loader(dataset, np.arange(len(dataset)), 4, training=False)))
    expected = torch.stack([host_normalize(split.row(row)[1], mean, std) for row in range(len(images))])
    moved = to_model_input(images, dataset.normalize, torch.device("cpu"))
    assert moved.dtype == torch.float32 and moved.is_contiguous()
    assert torch.equal(moved, expected)  # the same float32 operations, elementwise: the same bits on a CPU
    channels_last = to_model_input(images, dataset.normalize, torch.device("cpu"), torch.channels_last)
    assert channels_last.is_contiguous(memory_format=torch.channels_last) and torch.equal(channels_last, expected)


def test_prediction_preprocesses_as_before():
    from jobs.checkpoints.inference import TrainedModel

    mean, std = [0.3, 0.4, 0.5], [0.2, 0.25, 0.3]
    trained = TrainedModel(model=torch.nn.Identity(), height=8, width=12, normalize=Normalize(mean, std),
                           class_names=["a"], palette=np.zeros((1, 3), np.uint8), trial={})
    image = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    assert torch.equal(trained.preprocess(image), host_normalize(image, mean, std))


def test_gpu_only_options_on_a_cpu_are_ignored_by_name():
    options = device_options(TrainParams(amp="bf16", channels_last=True, sync_batchnorm=True), torch.device("cpu"), 2)
    assert options.amp_dtype is None and options.memory_format == torch.contiguous_format
    assert not options.sync_batchnorm and not options.pin_memory
    assert options.ignored == ("amp: bf16", "channels_last: true", "sync_batchnorm: true")
    assert device_options(TrainParams(), torch.device("cpu"), 1).ignored == ()


def trial_run_in_process(data, loader_workers: int, rank: int = 0, world_size: int = 1):
    trial = TrialSpec(name="000_unet", arch="unet", model={"base_width": 4, "depth": 2},
                      train=TrainParams(epochs=2, batch_size=4, augment="none", seed=3, amp="bf16",
                                        channels_last=True, loader_workers=loader_workers))
    # Port 1 refuses at once: rank 0's events wait in the publisher's buffer, and nothing waits on them.
    context = TrialContext(job_id="data-path", data=str(data), storage=str(data), redis_url="redis://127.0.0.1:1",
                           events_stream="unused")
    return build_trial_run(trial, context, rank, world_size, torch.device("cpu"), lambda model: model)


def val_miou_in_process(data, loader_workers: int) -> float:
    run = trial_run_in_process(data, loader_workers)
    state = start_iteration(run, 1, None)
    for epoch in (1, 2):
        train_one_epoch(run, state, epoch)
    return evaluate(run.core, run.datasets["val"], 0, 1, 4, run.device, run.manifest, run.memory_format,
                    loader_workers)["miou"]


def test_loader_workers_change_the_speed_not_the_results(dataset_dir, capsys):
    assert val_miou_in_process(dataset_dir, 2) == val_miou_in_process(dataset_dir, 0)
    notices = [line for line in capsys.readouterr().out.splitlines() if line.startswith("segq: ignoring")]
    assert notices == [notices[0]] * 2  # one line per trial
    assert "amp: bf16, channels_last: true" in notices[0] and "cpu" in notices[0]
    trial_run_in_process(dataset_dir, 0, rank=1, world_size=2)
    assert "segq: ignoring" not in capsys.readouterr().out  # rank 0 alone says it
