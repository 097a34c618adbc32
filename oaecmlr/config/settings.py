"""Every setting of a run, its default, and the names a setting may take. No torch here: the CLI
and the dashboard read and check configs without loading the engine.

Only the engine reads a Config; it hands plain values to the core (docs/method.md lists what each
setting does). Names of architectures, kNN backends and datasets are kept here as plain strings, and
tests check that they match the registries of `oaecmlr.models`, `oaecmlr.core.knn` and
`oaecmlr.data.datasets`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ARCHS = ("resnet50", "resnet50_ibn_a", "resnet18", "mobilenet_v2")
POOLINGS = ("gem", "avg")
KNN_BACKENDS = ("auto", "torch", "torch-bf16", "faiss", "numpy")
MEMORY_MODES = ("mean", "hard")
SAMPLERS = ("reference", "distinct")
RESIZE_FILTERS = ("bicubic", "bilinear")
IMAGE_CACHE = ("auto", "device", "host")
CAMERA_NORMS = ("none", "mean", "meanstd")
CUHK03_VARIANTS = ("labeled", "detected")
BN_RUNNING = ("first", "mean")
RUN_KINDS = ("usl", "supervised")
OAE_RULES = ("nearest", "support")  # oaecmlr.core.oae.RULES
CMLR_MODES = ("self", "propagated", "matched")  # oaecmlr.core.cmlr.MODES
# Dataset names and their aliases (oaecmlr.data.datasets parses them).
DATASETS = {"market1501": ("market",), "dukemtmcreid": ("duke",), "msmt17": ("msmt",), "cuhk03": (),
            "manifest": (), "synthetic": ()}


@dataclass
class RunSection:
    kind: str = "usl"  # "usl" (unsupervised) or "supervised" (oaecmlr pretrain)
    seed: int = 0
    epochs: int = 50
    iterations: int = 200  # training iterations per epoch
    eval_every: int = 10
    log_every: int = 10  # iterations between iteration events
    gpus: str = "cpu"  # "cpu", "0", "0,1", "cpu,cpu"
    threads: int = 0  # CPU threads for torch (0 = leave torch's default)


@dataclass
class DataSection:
    dataset: str = "market1501"
    root: str = ""  # empty: OAECMLR_DATA or ./data/<dataset>
    cuhk03: str = "labeled"  # CUHK03-NP: "labeled" or "detected" boxes (a root holding both folders)
    allow_outside: bool = False  # let manifest entries resolve (through symlinks) outside the data root
    height: int = 256
    width: int = 128
    num_ids: int = 16  # P identities per batch
    num_instances: int = 16  # K images per identity
    sampler: str = "reference"  # PK positives: "reference" (RandomMultipleGallerySampler) or "distinct"
    resize: str = "bicubic"  # PIL filter into the image cache: "bicubic" (the reference) or "bilinear"
    eval_batch: int = 256
    cache_dir: str = ""  # empty: OAECMLR_CACHE or ~/.cache/oaecmlr
    holdout_ids: int = 0  # > 0: evaluate on this many held-out training ids, never on the test split
    flip_p: float = 0.5
    pad: int = 10
    erase_p: float = 0.5
    image_cache: str = "auto"  # on a GPU: auto (device memory when it fits, else pinned host), device, host
    device_reserve_gb: float = 24.0  # GPU memory `auto` leaves free for training
    # synthetic dataset size (dataset = "synthetic")
    synthetic_ids: int = 100
    synthetic_test_ids: int = 50
    synthetic_cams: int = 4
    synthetic_images: int = 4  # per identity and camera
    synthetic_seed: int = 0


@dataclass
class ModelSection:
    arch: str = "resnet50"
    pretrained: str = ""  # torchvision-format weights file
    init: str = ""  # a run (its best.pt) or a checkpoint to start from (UDA stage 2)
    pooling: str = "gem"
    last_stride: int = 1


@dataclass
class OptimSection:
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    step_size: int = 20  # epochs between lr x gamma
    gamma: float = 0.1


@dataclass
class ClusterSection:
    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    knn_backend: str = "auto"
    camera_jaccard: bool = False  # CA-Jaccard (Chen et al., CVPR 2024): rankings within and across cameras
    k1_intra: int = 5  # CA-Jaccard's k-reciprocal set within the sample's camera
    k1_inter: int = 20  # ... and across the other cameras
    k2_intra: int = 2  # camera-aware query expansion over this many same-camera neighbours
    k2_inter: int = 4  # ... and this many other-camera neighbours
    camera_norm: str = "none"  # centre ("mean") or standardise ("meanstd") features per camera before clustering


@dataclass
class OAESection:
    enabled: bool = True
    k: int = 5
    rho: float = 1.0
    rounds: int = 1
    rule: str = "nearest"  # "support" adds CASTOR's neighbour vote and the nearest-centroid check
    support: int = 2  # the support rule: votes of the cluster among the outlier's support_k nearest
    support_k: int = 10  # ... nearest Jaccard neighbours
    camera_shift: float = 0.0  # CASTOR's camera shift (our addition): cross-camera Jaccard lowered by this, decaying


@dataclass
class CMLRSection:
    enabled: bool = True
    mode: str = "self"  # "self" (the sample's own centroid match), "propagated" (its Jaccard neighbours'), "matched" (RLCC)
    lam: float = 0.5
    tau_r: float = 0.05  # self
    top_k: int = 0  # self: 0 = all centroids
    weight: float = 1.0  # self and matched: w of CE + w soft-CE
    warmup: int = 0  # epochs of plain CE before soft labels are used
    radius: float = 0.2  # propagated: Jaccard distance of the neighbours averaged
    candidates: int = 5  # propagated: centroids kept per sample
    min_spread: float = 0.02  # propagated: floor of a cluster's similarity std


@dataclass
class MemorySection:
    temperature: float = 0.05
    momentum: float = 0.1
    mode: str = "mean"
    camera_proxies: bool = False  # one proxy per (cluster, camera) and an inter-camera loss (CAP / ICE)
    camera_weight: float = 0.5  # weight of the inter-camera loss
    camera_temperature: float = 0.07
    camera_negatives: int = 50  # hardest other-cluster proxies in the inter-camera loss


@dataclass
class SupervisedSection:
    """`oaecmlr pretrain`: label-smoothed CE + batch-hard triplet (UDA stage 1)."""

    label_smoothing: float = 0.1
    triplet_margin: float = 0.3


@dataclass
class TrainSection:
    amp: bool = False  # opt in: bf16 autocast of the training step where fast (CUDA, AVX512-BF16, AMX); the reference is float32
    amp_extract: bool = False  # bf16 also for clustering and test features (the reference extracts in float32)
    channels_last: bool = True
    bn_group: int = 64  # images per BatchNorm statistics group (the reference: 4 DataParallel GPUs); 0 = global batch
    bn_running: str = "first"  # running statistics of the first group (as DataParallel's replica 0) or the "mean"
    dist_timeout: float = 300.0  # seconds before a hung worker fails the run
    deterministic: bool = False  # deterministic cuDNN kernels; else cudnn.benchmark picks the fastest (GPU only)


@dataclass
class Config:
    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    oae: OAESection = field(default_factory=OAESection)
    cmlr: CMLRSection = field(default_factory=CMLRSection)
    memory: MemorySection = field(default_factory=MemorySection)
    supervised: SupervisedSection = field(default_factory=SupervisedSection)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        return {f"{section}.{key}": value for section, values in self.to_dict().items() for key, value in values.items()}

    def get(self, dotted: str) -> Any:
        section, _, key = dotted.partition(".")
        return getattr(getattr(self, section), key)
