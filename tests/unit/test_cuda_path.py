"""The CUDA path, checked on a CPU (issue 24). No GPU runs here: each test checks a piece of that
path that needs no GPU (the arithmetic, the decisions, the calls made), through the same code the
GPU runs, with torch's CUDA queries replaced by injected answers where one is needed. What only a
GPU can show (timings, real syncs, faiss-gpu itself) is `benchmarks/device_check.sh`'s."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
import torch.distributed as tdist
from helpers import clustered_features, exact_ranking, knn_module
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from oaecmlr.core.knn import _bf16_error, knn


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# 1. every device indexed ------------------------------------------------------------------------------
def test_an_index_less_cuda_device_resolves_to_the_current_one_without_a_gpu(monkeypatch, no_cuda):
    from oaecmlr.engine.devices import resolve_device

    assert resolve_device(torch.device("cuda")) == torch.device("cuda:0")  # no CUDA: torch's default current device
    assert resolve_device("cuda:2") == torch.device("cuda:2")
    assert resolve_device(torch.device("cpu", 0)) == torch.device("cpu") == torch.zeros(1).device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert resolve_device("cuda") == torch.device("cuda:3")


def test_init_group_joins_nccl_with_an_indexed_device(monkeypatch, no_cuda):
    """bench_train --ddp passed `cuda`: set_device and init_process_group(device_id=...) need an index."""
    from oaecmlr.engine.distributed import init_group

    calls = {}
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.setdefault("set_device", device))
    monkeypatch.setattr(tdist, "init_process_group", lambda backend, **kw: calls.update(backend=backend, **kw))
    joined = init_group(torch.device("cuda"), 0, 1, 5.0)
    assert joined == torch.device("cuda:0")
    assert calls["backend"] == "nccl" and calls["set_device"] == joined and calls["device_id"] == joined


def test_the_loop_and_the_image_cache_agree_on_the_device(tmp_path):
    """`Loop.batch_images` takes the fast path only when `images.device == loop.device`; a tensor's
    device always carries CUDA's index and never the CPU's. `cpu:0` shows the mismatch on a CPU
    (`cuda` against `cuda:0` is the same on a GPU): both go through `resolve_device`."""
    from enginefixtures import tiny_config

    from oaecmlr.engine.placement import place_images
    from oaecmlr.engine.rundata import load_run_data
    from oaecmlr.engine.train_process import build_loop
    from oaecmlr.store.runs import RunDir

    config = tiny_config()
    data = place_images(load_run_data(config.data), torch.device("cpu", 0))
    loop = build_loop(config, RunDir(tmp_path), data, torch.device("cpu", 0), None)
    assert loop.device == data.train.images.device == torch.device("cpu")


# 2. no host sync in the augmentation ---------------------------------------------------------------------
class OpCounter(TorchDispatchMode):
    """Counts the aten ops that sync with a GPU or copy host data to it: `.item()`
    (`_local_scalar_dense`), a tensor built from Python data (`lift_fresh`, then a host-to-device
    copy on CUDA) and `masked_fill_` with a tensor value (which calls `.item()` on CUDA)."""

    WATCHED = {"aten._local_scalar_dense.default", "aten.lift_fresh.default", "aten.masked_fill_.Tensor",
               "aten.masked_fill.Tensor"}

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) in self.WATCHED:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def test_augmenting_a_batch_takes_no_python_data_to_the_device_and_reads_nothing_back():
    """On a GPU these ops cost ~11 syncs per batch (issue 24); the same code counted on the CPU.
    The device check counts the real syncs with torch.cuda.set_sync_debug_mode."""
    from oaecmlr.data.augment import apply_params, eval_batch, sample_params

    images = torch.randint(0, 256, (8, 3, 24, 12), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    apply_params(images, (24, 12), sample_params(8, (24, 12), generator), pad=4)  # builds the per-device constants
    with OpCounter() as counter:
        params = sample_params(8, (24, 12), generator, 0.5, 4, 0.5).to(images.device)
        apply_params(images, (24, 12), params, pad=4)
        eval_batch(images, (24, 12))
    assert counter.seen == []


def test_augmentation_parameters_travel_as_one_packed_tensor():
    """On CUDA `AugParams.to` makes one pinned copy of `pack()` and unpacks it on the device."""
    from oaecmlr.data.augment import AugParams, sample_params

    params = sample_params(16, (32, 16), torch.Generator().manual_seed(3), 0.5, 4, 0.5)
    packed = params.pack()
    assert packed.shape == (16, 7) and packed.dtype == torch.int64
    back = AugParams.unpack(packed)
    for name in ("flip", "offset", "erase"):
        assert torch.equal(getattr(back, name), getattr(params, name))
    assert back.flip.dtype == torch.bool


# 4. the bf16 kNN certificate ----------------------------------------------------------------------------------
def _round_bf16(x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.asarray(x, dtype=np.float32)).bfloat16().double().numpy()


def _bf16_dot(a: np.ndarray, b: np.ndarray, partial: int | None = None) -> float:
    """A bf16 product: inputs rounded to bf16, products summed in float32 one at a time, the result
    rounded to bf16. With `partial`, every `partial` terms the running sum is rounded to bf16, as a
    reduced-precision (split-K) reduction may do."""
    products = (_round_bf16(a) * _round_bf16(b)).astype(np.float32)
    total = np.float32(0)
    for i, p in enumerate(products, start=1):
        total = np.float32(total + p)
        if partial and i % partial == 0:
            total = np.float32(_round_bf16(total))
    return float(_round_bf16(total))


def _hard_pairs(dim: int, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """Unit vectors whose rounding errors add up: equal positive entries, near-parallel random ones."""
    flat = np.full(dim, 1 / np.sqrt(dim))
    a = rng.normal(size=dim)
    a /= np.linalg.norm(a)
    b = a + 0.01 * rng.normal(size=dim)
    b /= np.linalg.norm(b)
    c = np.abs(rng.normal(size=dim))
    c /= np.linalg.norm(c)
    return [(flat, flat), (a, b), (c, c), (a, a)]


@pytest.mark.parametrize("dim", [64, 512, 2048])
def test_bf16_error_bound_covers_bf16_products_with_float32_accumulation(dim):
    rng = np.random.default_rng(dim)
    for a, b in _hard_pairs(dim, rng):
        exact = float(a.astype(np.float32).astype(np.float64) @ b.astype(np.float32).astype(np.float64))
        assert abs(_bf16_dot(a, b) - exact) <= _bf16_error(dim)
        torch_product = (torch.from_numpy(a[None]).float().bfloat16() @ torch.from_numpy(b[:, None]).float().bfloat16())
        assert abs(float(torch_product.float()) - exact) <= _bf16_error(dim)


def test_reduced_precision_reductions_break_the_bf16_bound():
    """Why the search turns `allow_bf16_reduced_precision_reduction` off: with partial sums kept in
    bf16 the error of a 2048-long product leaves the bound the certificate relies on."""
    dim = 2048
    flat = np.full(dim, 1 / np.sqrt(dim))
    exact = float(flat.astype(np.float32).astype(np.float64) @ flat.astype(np.float32).astype(np.float64))
    assert abs(_bf16_dot(flat, flat, partial=1) - exact) > _bf16_error(dim)


class MatmulFlags(TorchFunctionMode):
    """The precision flags in force at each matrix product."""

    def __init__(self):
        super().__init__()
        self.flags: list[tuple[bool, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.matmul, torch.Tensor.__matmul__, torch.mm, torch.bmm, torch.Tensor.matmul):
            self.flags.append((torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
                               torch.get_float32_matmul_precision()))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("search", ["torch-bf16", "torch", "camera"])
def test_every_search_product_accumulates_in_float32_and_the_flags_come_back(search):
    """The flags only act on CUDA; what is checked here is that every product of the search runs with
    them off, whatever the user set, and that the user's settings are restored."""
    from oaecmlr.core.camera_jaccard import camera_rankings

    features = torch.from_numpy(clustered_features(300, 16, num_clusters=12, seed=5)[0])
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_bf16_reduced_precision_reduction, torch.get_float32_matmul_precision()
    try:
        matmul.allow_bf16_reduced_precision_reduction = True
        torch.set_float32_matmul_precision("high")  # TF32 on a GPU
        with MatmulFlags() as mode:
            if search == "camera":
                camera_rankings(features, np.arange(300) % 3, 5, 10)
            else:
                knn(features, 10, backend=search)
        assert mode.flags and set(mode.flags) == {(False, "highest")}
        assert (matmul.allow_bf16_reduced_precision_reduction, torch.get_float32_matmul_precision()) == (True, "high")
    finally:
        matmul.allow_bf16_reduced_precision_reduction = before[0]
        torch.set_float32_matmul_precision(before[1])


# 5. bf16 where it is fast, and provenance -------------------------------------------------------------------------
@pytest.mark.parametrize("capability, fast", [((6, 1), False), ((7, 0), False), ((7, 5), False), ((8, 0), True),
                                              ((8, 6), True), ((8, 9), True), ((9, 0), True), ((10, 0), True),
                                              (None, False)])
def test_bf16_is_fast_on_gpus_of_compute_capability_8_and_up(capability, fast):
    from oaecmlr.engine.devices import bf16_is_fast

    assert bf16_is_fast("cuda", capability) is fast  # V100 (7.0) and T4 (7.5) have no bf16 tensor cores


def test_bf16_on_the_cpu_needs_its_units():
    from oaecmlr.engine.devices import bf16_is_fast

    assert bf16_is_fast("cpu", cpu_bf16_units=True) and not bf16_is_fast("cpu", cpu_bf16_units=False)
    assert not bf16_is_fast("mps", (9, 0))


def fake_gpu(monkeypatch, name="Tesla V100-SXM2-16GB", capability=(7, 0), uuid="5d3f1b2e-0000-4a1b-8c2d-aabbccddeeff"):
    """torch's CUDA queries answering for one GPU, so the code that reads them runs on a CPU."""
    properties = types.SimpleNamespace(name=name, major=capability[0], minor=capability[1], uuid=uuid)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


def test_provenance_records_the_gpu_truthfully(monkeypatch, no_cuda):
    from oaecmlr.engine.provenance import provenance

    fake_gpu(monkeypatch)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    record = provenance(torch.device("cuda"))
    assert record["bf16"] is False and record["gpu"] == "Tesla V100-SXM2-16GB" and record["capability"] == "7.0"
    assert record["gpus"] == [{"device": "cuda:0", "name": "Tesla V100-SXM2-16GB", "capability": "7.0",
                               "uuid": "GPU-5d3f1b2e-0000-4a1b-8c2d-aabbccddeeff"}]
    assert record["cudnn_benchmark"] is True and record["deterministic"] is False
    fake_gpu(monkeypatch, "NVIDIA H100 80GB HBM3", (9, 0))
    assert provenance(torch.device("cuda:0"))["bf16"] is True
    assert "gpu" not in provenance(torch.device("cpu"))


# 7. faiss on the GPU -------------------------------------------------------------------------------------------------
class FakeFaissGpu(types.ModuleType):
    """faiss-gpu's interface as the kNN uses it, computing on the CPU: resources are counted, and
    `fail` makes the search fail as a full GPU makes faiss fail."""

    METRIC_INNER_PRODUCT = 0

    def __init__(self, fail: bool = False):
        super().__init__("faiss")
        self.created, self.searches, self.fail = 0, 0, fail
        outer = self

        class StandardGpuResources:
            def __init__(self):
                outer.created += 1

        self.StandardGpuResources = StandardGpuResources

    def knn_gpu(self, resources, xq, xb, k, metric=None, device=None):
        self.searches += 1
        if self.fail:
            raise RuntimeError("Error in virtual void* faiss::gpu::StandardGpuResourcesImpl::allocMemory: "
                               "StandardGpuResources: alloc fail type TemporaryMemoryBuffer (cudaMalloc error out of memory [2])")
        top = (xq @ xb.T).topk(k, dim=1)
        return top.values, top.indices


def install_fake_faiss(monkeypatch, fake):
    monkeypatch.setitem(sys.modules, "faiss", fake)
    monkeypatch.setitem(sys.modules, "faiss.contrib", types.ModuleType("faiss.contrib"))
    monkeypatch.setitem(sys.modules, "faiss.contrib.torch_utils", types.ModuleType("faiss.contrib.torch_utils"))
    monkeypatch.setattr(knn_module, "_GPU_RESOURCES", {})
    monkeypatch.setattr(knn_module, "faiss_available", lambda: True)
    freed = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(fake.searches))
    return freed


def test_faiss_gpu_keeps_one_resources_object_and_frees_the_torch_cache_first(monkeypatch):
    """The GPU search itself needs faiss-gpu and a GPU; this checks what surrounds it."""
    fake = FakeFaissGpu()
    freed = install_fake_faiss(monkeypatch, fake)
    features = torch.from_numpy(clustered_features(120, 8, num_clusters=6, seed=1)[0])
    for _ in range(3):  # three epochs
        index, values, used = knn_module._candidates_faiss(features, 12, 4096, on_gpu=True)
    assert fake.created == 1 and fake.searches == 3 and used == "faiss"
    assert freed == [0, 1, 2]  # before each search


def test_faiss_out_of_gpu_memory_falls_back_to_the_torch_knn_with_one_warning(monkeypatch, caplog):
    fake = FakeFaissGpu(fail=True)
    install_fake_faiss(monkeypatch, fake)
    original = knn_module._candidates_faiss
    monkeypatch.setattr(knn_module, "_candidates_faiss", lambda f, m, c: original(f, m, c, on_gpu=True))
    features = torch.from_numpy(clustered_features(150, 16, num_clusters=8, seed=2)[0])
    with caplog.at_level("WARNING", logger="oaecmlr.core.knn"):
        result = knn(features, 7, backend="faiss")
    assert result.backend == "torch" and fake.searches == 1
    np.testing.assert_array_equal(result.index.numpy(), exact_ranking(features.numpy(), 7))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "out of GPU memory" in warnings[0] and "\n" not in warnings[0]


def test_other_faiss_errors_are_not_taken_for_a_full_gpu(monkeypatch):
    fake = FakeFaissGpu()
    install_fake_faiss(monkeypatch, fake)
    fake.knn_gpu = lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("k must be <= 2048"))
    features = torch.from_numpy(clustered_features(40, 8, num_clusters=4, seed=3)[0])
    with pytest.raises(RuntimeError, match="2048"):
        knn_module._candidates_faiss(features, 5, 4096, on_gpu=True)


# 8. oaecmlr eval on a GPU -----------------------------------------------------------------------------------------------
def test_eval_device_is_checked_like_gpus(monkeypatch):
    from oaecmlr.cli.evaluate import pick_device
    from oaecmlr.errors import CliError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CliError, match=r"--device 3 needs CUDA, but no CUDA device is visible here .*use --device cpu"):
        pick_device("3")
    assert pick_device("cpu") == torch.device("cpu") and pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(CliError, match="cuda:3 does not exist; this machine has 2 CUDA device"):
        pick_device("3")
    with pytest.raises(CliError, match="one device"):
        pick_device("0,1")
    assert pick_device("1") == pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(CliError, match="neither 'cpu' nor a CUDA index"):
        pick_device("gpu")


def test_rerank_on_a_gpu_without_room_goes_to_the_cpu_and_says_so(monkeypatch):
    """The decision at MSMT17's size, with the GPU's free memory injected (the chunked re-ranking
    itself is checked on the CPU in test_rerank.py, against the dense oracle)."""
    from oaecmlr.core.rerank import re_rank_bytes
    from oaecmlr.engine.features import rerank_device

    need = re_rank_bytes(11659, 82161, 2048)
    assert 10 * 2**30 < need < 16 * 2**30  # the q x g result thrice, not a 27 GB g x g matrix
    heard = []
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)  # 1 GiB cached and free
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (7 * 2**30, 80 * 2**30))
    gpu = torch.device("cuda:0")
    assert rerank_device(gpu, 11659, 82161, 2048, heard.append) == torch.device("cpu")
    assert heard == [f"re-ranking on the CPU: it needs about {need / 2**30:.1f} GiB and cuda:0 has 8.0 GiB free"]
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (70 * 2**30, 80 * 2**30))
    assert rerank_device(gpu, 11659, 82161, 2048, heard.append) == gpu and len(heard) == 1


# 9. the dashboard's GPUs ---------------------------------------------------------------------------------------------------
def fake_nvml(uuids, busy, used_gib):
    return types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: len(uuids), nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=lambda h: uuids[h].encode(),  # bytes, as older pynvml versions return
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=busy[h]),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=used_gib[h] * 2**30, total=80 * 2**30))


def test_dashboard_names_the_runs_gpus_through_their_uuids_and_lists_them_first(monkeypatch):
    """CUDA_VISIBLE_DEVICES=2,3 --gpus 0,1: the run's cuda:0 is NVML's GPU 2."""
    import sys

    from oaecmlr_tui import gpu

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(["GPU-a", "GPU-b", "GPU-c", "GPU-d"], [0, 1, 97, 95],
                                                         [0.5, 0.5, 70.0, 71.0]))
    monkeypatch.setattr(gpu, "_state", {})
    run = ({"device": "cuda:0", "uuid": "GPU-c"}, {"device": "cuda:1", "uuid": "GPU-d"})
    assert gpu.gpu_lines(run) == ("run cuda:0 (NVML 2):  97% busy  memory 70.0/80.0 GiB",
                                  "run cuda:1 (NVML 3):  95% busy  memory 71.0/80.0 GiB",
                                  "NVML 0:   0% busy  memory 0.5/80.0 GiB", "NVML 1:   1% busy  memory 0.5/80.0 GiB")
    assert gpu.gpu_lines(({"device": "cuda:0", "uuid": "GPU-elsewhere"}, "junk"))[0] == \
        "run cuda:0: not seen by NVML on this machine"
    assert gpu.gpu_lines()[0] == "NVML 0:   0% busy  memory 0.5/80.0 GiB"  # a CPU run, or one from before


def test_the_runs_gpus_are_those_of_its_last_start_or_resume():
    from oaecmlr.store.schema import Resume, Start
    from oaecmlr.store.summary import RunFold

    start = Start(schema=3, kind="usl", run="r", dataset="market1501", epochs=2, iterations=2, arch="resnet50",
                  world_size=1, per_rank_batch=4, global_batch=4, lr=1.0, device="cuda:0", seed=0,
                  provenance={"gpus": [{"device": "cuda:0", "uuid": "GPU-a"}]})
    fold = RunFold().add([start])
    assert fold.summary("r", "r", "running").gpus == ({"device": "cuda:0", "uuid": "GPU-a"},)
    resumed = fold.add([Resume(from_epoch=1, gpus=[{"device": "cuda:0", "uuid": "GPU-b"}])]).summary("r", "r", "running")
    assert resumed.gpus == ({"device": "cuda:0", "uuid": "GPU-b"},)


# 10. cuDNN benchmark --------------------------------------------------------------------------------------------------------
def test_cudnn_benchmarks_training_kernels_unless_deterministic_ones_are_asked_for(monkeypatch):
    from oaecmlr.engine.devices import configure_kernels, cudnn_benchmark

    assert cudnn_benchmark(torch.device("cuda:0"), deterministic=False) is True
    assert cudnn_benchmark(torch.device("cuda:0"), deterministic=True) is False
    assert cudnn_benchmark(torch.device("cpu"), deterministic=False) is False
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    configure_kernels(torch.device("cpu"), False)
    assert torch.backends.cudnn.benchmark is False  # the CPU is left alone
    configure_kernels(torch.device("cuda:1"), False)
    assert torch.backends.cudnn.benchmark is True and torch.backends.cudnn.deterministic is False
    configure_kernels(torch.device("cuda:1"), True)
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True


def test_deterministic_is_a_checked_setting():
    from oaecmlr.config import load_config, validate
    from oaecmlr.errors import ConfigError

    assert load_config("demo").train.deterministic is False
    assert load_config("demo", sets=["train.deterministic=true"]).train.deterministic is True
    config = load_config("demo")
    config.train.deterministic = "yes"
    with pytest.raises(ConfigError, match="train.deterministic must be one of False, True"):
        validate(config)


# 12. collectives on the Dist's device --------------------------------------------------------------------------------------
def test_a_collective_refuses_a_tensor_off_its_device_before_the_backend_sees_it():
    """The check runs on every backend; on a GPU it turns NCCL's error about a CPU tensor into one
    that names Dist.device. (The gloo tests in test_distributed.py assert every tensor that reaches
    torch.distributed is on it.)"""
    from oaecmlr.engine.distributed import Dist

    dist = Dist(0, 2, 0, device=torch.device("cpu", 0))
    assert dist.device == torch.device("cpu")
    for collective in (dist.mean, dist.all_gather_cat, lambda t: dist.gather_rows(t, [1, 1])):
        with pytest.raises(RuntimeError, match=r"a collective got a tensor on meta; .* run on cpu \(Dist.device\)"):
            collective(torch.zeros(1, device="meta"))
