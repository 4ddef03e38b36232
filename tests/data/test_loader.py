"""torch datasets, transforms and loaders over an image cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from facescan.data import loader as loader_module
from facescan.data.cache import ImageCache, ImageStream, write_cache
from facescan.data.loader import CacheDataset, build_loader, default_num_workers
from facescan.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Degradations,
    eval_transform,
    train_transform,
)

N, SIZE, INPUT = 20, 40, 32


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> ImageCache:
    """20 images of 40 px: image i has constant value 10 * i in every channel, label i % 2."""
    images = [np.full((3, SIZE, SIZE), 10 * i, np.uint8) for i in range(N)]
    stream = ImageStream(
        size=SIZE,
        labels=[i % 2 for i in range(N)],
        paths=[f"/img/{i:02d}.png" for i in range(N)],
        images=lambda: iter(images),
    )
    return write_cache(tmp_path_factory.mktemp("cache") / "train", stream)


@pytest.fixture(scope="module")
def textured(tmp_path_factory: pytest.TempPathFactory) -> ImageCache:
    """Random images, so crops and flips change the pixels."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8) for _ in range(N)]
    stream = ImageStream(
        SIZE, [i % 2 for i in range(N)], [str(i) for i in range(N)], lambda: iter(images)
    )
    return write_cache(tmp_path_factory.mktemp("cache") / "train", stream)


def _expected(value: int) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return (value / 255.0 - mean) / std


def test_eval_items_are_normalised_float_tensors(cache: ImageCache) -> None:
    dataset = CacheDataset(cache, train=False, input_size=INPUT)
    assert len(dataset) == N
    image, label = dataset[7]
    assert image.shape == (3, INPUT, INPUT) and image.dtype == torch.float32
    assert label == 1
    # A constant image stays constant through resize and crop; only the normalisation acts.
    torch.testing.assert_close(image.mean(dim=(1, 2)), _expected(70), atol=1e-5, rtol=0)
    assert image.std(dim=(1, 2)).max() < 1e-5


def test_eval_loader_keeps_order_and_every_image(cache: ImageCache) -> None:
    loader = build_loader(cache, train=False, input_size=INPUT, batch_size=8)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [8, 8, 4]  # nothing dropped at evaluation
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert images.shape == (N, 3, INPUT, INPUT) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == [i % 2 for i in range(N)]
    torch.testing.assert_close(
        images[:, :, 0, 0], torch.stack([_expected(10 * i) for i in range(N)])
    )


def test_eval_transform_is_deterministic_and_takes_batches() -> None:
    batch = torch.randint(0, 256, (4, 3, 50, 60), dtype=torch.uint8)
    transform = eval_transform(INPUT)
    out = transform(batch)
    assert out.shape == (4, 3, INPUT, INPUT)
    torch.testing.assert_close(out, transform(batch), rtol=0, atol=0)


def test_train_transform_augments(textured: ImageCache) -> None:
    pixels = torch.from_numpy(np.array(textured[0][0]))
    transform = train_transform(INPUT)
    torch.manual_seed(0)
    outs = [transform(pixels) for _ in range(4)]
    assert all(o.shape == (3, INPUT, INPUT) and o.dtype == torch.float32 for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_train_loader_shuffles_drops_last_and_is_seeded(textured: ImageCache) -> None:
    def epoch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        loader = build_loader(
            textured, train=True, input_size=INPUT, batch_size=8, num_workers=1, seed=seed
        )
        batches = list(loader)
        assert [len(y) for _, y in batches] == [8, 8]  # the incomplete batch is dropped
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    (x1, y1), (x2, y2), (x3, _) = epoch(3), epoch(3), epoch(4)
    # One worker, seeded only through the loader: the same seed gives the same batches.
    torch.testing.assert_close(x1, x2, rtol=0, atol=0)
    assert torch.equal(y1, y2)
    assert not torch.equal(x1, x3)


#: Both degradations, often, with strong settings (so that they change the pixels).
DEGRADED = Degradations(blur_p=0.5, blur_sigma=(0.5, 2.0), jpeg_p=0.5, jpeg_quality=(20, 60))
_JPEG_DEPRECATED = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)


def _report_recipe() -> v2.Compose:
    """train_transform as it was before degradations existed."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(INPUT, scale=(0.8, 1.0), antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
        ]
    )


def _train_epoch(cache: ImageCache, seed: int, workers: int, **kwargs: object) -> torch.Tensor:
    loader = build_loader(
        cache, train=True, input_size=INPUT, batch_size=8, num_workers=workers, seed=seed, **kwargs
    )
    return torch.cat([x for x, _ in loader])


@pytest.mark.parametrize("degradations", [None, Degradations()])
def test_without_degradations_the_loader_gives_the_batches_of_before(
    textured: ImageCache, degradations: Degradations | None
) -> None:
    """Existing runs reproduce bit for bit: in the process (the engine seeds torch) the loader
    applies the report's recipe with the same draws, in order; with workers (seeded by the
    loader) no argument and ``Degradations()`` give the same batches."""
    sampler = torch.utils.data.SequentialSampler(range(N))
    torch.manual_seed(11)
    got = _train_epoch(textured, 0, 0, sampler=sampler, degradations=degradations)
    torch.manual_seed(11)
    recipe = _report_recipe()
    expected = torch.stack([recipe(torch.from_numpy(np.array(textured[i][0]))) for i in range(16)])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(
        _train_epoch(textured, 3, 1, degradations=degradations),
        _train_epoch(textured, 3, 1),
        rtol=0,
        atol=0,
    )


@_JPEG_DEPRECATED
@pytest.mark.parametrize("workers", [0, 1])
def test_degraded_batches_are_reproducible_under_the_seed(
    textured: ImageCache, workers: int
) -> None:
    """One worker is seeded by the loader alone; without workers the engine seeds torch."""

    def epoch(seed: int, degradations: Degradations | None = DEGRADED) -> torch.Tensor:
        torch.manual_seed(seed)  # what the training engine does (num_workers=0 draws from it)
        return _train_epoch(textured, seed, workers, degradations=degradations)

    first, again, other = epoch(3), epoch(3), epoch(4)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)
    assert not torch.equal(first, epoch(3, None))  # the degradations did something


@_JPEG_DEPRECATED
def test_degradations_are_drawn_per_image(textured: ImageCache) -> None:
    """Applied in __getitem__ before the crop: each image gets its own draw, some none at all."""
    jpeg = Degradations(jpeg_p=0.5, jpeg_quality=(5, 5))
    dataset = CacheDataset(textured, train=True, input_size=SIZE, degradations=jpeg)
    first = dataset.transform.transforms[0]
    assert isinstance(first, v2.RandomApply) and isinstance(first.transforms[0], v2.JPEG)
    # Keep the degradation, drop the crop and flip (identity at the cache's size) to see it alone.
    dataset.transform = v2.Compose([first, *eval_transform(SIZE).transforms])
    plain = CacheDataset(textured, train=False, input_size=SIZE)
    torch.manual_seed(0)
    changed = [not torch.equal(dataset[i][0], plain[i][0]) for i in range(N)]
    assert 0 < sum(changed) < N


def test_degradations_are_for_training_only(cache: ImageCache) -> None:
    kwargs = {"train": False, "input_size": INPUT, "batch_size": 8}
    with pytest.raises(ValueError, match=r"preprocess.augment\) apply to training loaders only"):
        build_loader(cache, **kwargs, degradations=DEGRADED)
    assert build_loader(cache, **kwargs, degradations=Degradations()).dataset.degradations is None
    with pytest.raises(TypeError, match="degradations must be a Degradations or None, got dict"):
        build_loader(cache, **kwargs, degradations={"blur": {"p": 0.5}})  # type: ignore[arg-type]


def test_loader_workers_read_the_memmap(cache: ImageCache) -> None:
    direct = torch.cat(
        [x for x, _ in build_loader(cache, train=False, input_size=INPUT, batch_size=8)]
    )
    loader = build_loader(cache, train=False, input_size=INPUT, batch_size=8, num_workers=2)
    assert loader.persistent_workers
    parallel = torch.cat([x for x, _ in loader])
    torch.testing.assert_close(parallel, direct, rtol=0, atol=0)


def test_sampler_decides_the_order(cache: ImageCache) -> None:
    sampler = torch.utils.data.SequentialSampler(range(N))
    loader = build_loader(cache, train=True, input_size=INPUT, batch_size=5, sampler=sampler)
    labels = torch.cat([y for _, y in loader])
    assert labels.tolist() == [i % 2 for i in range(N)]


def test_build_loader_rejects_a_batch_larger_than_the_split(cache: ImageCache) -> None:
    with pytest.raises(ValueError, match=r"batch_size \(32\) is larger than the 20 images"):
        build_loader(cache, train=True, input_size=INPUT, batch_size=32)
    # evaluation keeps the incomplete batch, so it is fine there
    assert len(build_loader(cache, train=False, input_size=INPUT, batch_size=32)) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 4, "num_workers": -1}, "num_workers"),
        ({"batch_size": 4, "input_size": 0}, "preprocess.input_size"),
        ({"batch_size": 4, "input_size": 64}, r"preprocess.input_size \(64\) is larger"),
    ],
)
def test_build_loader_rejects_bad_arguments(cache: ImageCache, kwargs: dict, message: str) -> None:
    kwargs = {"input_size": INPUT, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_loader(cache, train=False, **kwargs)


@pytest.mark.parametrize(
    ("cores", "ranks", "cuda", "expected"),
    [
        (2, 1, False, 0),  # the 2-core CPU demo loads in the training process
        (4, 1, False, 1),
        (64, 1, False, 2),
        (1, 1, True, 0),
        (16, 1, True, 8),
        (16, 8, True, 1),
    ],
)
def test_default_num_workers_leaves_cores_for_compute(
    monkeypatch: pytest.MonkeyPatch, cores: int, ranks: int, cuda: bool, expected: int
) -> None:
    monkeypatch.setattr(loader_module, "usable_cores", lambda: cores)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert default_num_workers(ranks) == expected


@pytest.mark.parametrize(
    ("cores", "ranks", "device_type", "expected"),
    [
        (16, 1, "cpu", 2),  # training.device: cpu on a GPU machine: the CPU's count
        (2, 1, "cpu", 0),
        (16, 1, "cuda", 8),
        (16, 8, "cuda", 1),
    ],
)
def test_default_num_workers_follows_the_chosen_device_not_gpu_presence(
    monkeypatch: pytest.MonkeyPatch, cores: int, ranks: int, device_type: str, expected: int
) -> None:
    """Issue "Ready for GPUs" item 7: the trainer passes its device's type."""
    monkeypatch.setattr(loader_module, "usable_cores", lambda: cores)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine
    assert default_num_workers(ranks, device_type) == expected
    with pytest.raises(ValueError, match="device_type must be 'cpu' or 'cuda', got 'gpu'"):
        default_num_workers(ranks, "gpu")


def test_pinned_memory_follows_the_chosen_device(
    cache: ImageCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue "Ready for GPUs" item 7: ``training.device: cpu`` on a GPU machine must not pin
    batches (pinning opens a CUDA context on GPU 0); callers that pass nothing keep the old
    default (pinned when torch sees a GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine
    kwargs = {"train": False, "input_size": INPUT, "batch_size": 8}
    assert not build_loader(cache, **kwargs, pin_memory=False).pin_memory
    assert build_loader(cache, **kwargs, pin_memory=True).pin_memory
    assert build_loader(cache, **kwargs).pin_memory
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not build_loader(cache, **kwargs).pin_memory


def test_default_num_workers_reads_this_machine() -> None:
    assert 0 <= default_num_workers() <= 8


def test_cache_dataset_from_a_written_folder(tmp_path: Path) -> None:
    stream = ImageStream(SIZE, [1], ["x"], lambda: iter([np.zeros((3, SIZE, SIZE), np.uint8)]))
    cache = write_cache(tmp_path / "c", stream)
    image, label = CacheDataset(cache, train=True, input_size=INPUT)[0]
    assert image.shape == (3, INPUT, INPUT) and label == 1
    torch.testing.assert_close(image.mean(dim=(1, 2)), _expected(0), atol=1e-5, rtol=0)
