"""The method's configuration: stage schedules, every constant of the method, and the dataset presets
of the original configs (METHOD §1.3, §1.9; EXTENSIONS §2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

from .sampling import DEFAULT_RAND_LIGHT

NET_NAMES = ("netD", "netA", "netV", "netL", "netEnc")
# Which networks each step trains (METHOD §1.1).
STEP_NETS = {1: ("netA",), 2: ("netEnc",), 3: ("netD", "netA", "netV", "netL"), 0: ("netD",)}
# What the V/L warm-up (our option ``vl_warmup``) trains: step-3 iterations with D and A frozen.
WARMUP_NETS = ("netV", "netL")


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    """One stage: ``n1`` step-1 iterations, then ``rounds`` × (``n2`` step-2, collect, ``n3`` step-3)."""

    n1: int
    n2: int
    n3: int
    flip1: bool = False
    flip3: bool = False
    rounds: int = 1


def original_schedule(num_stage: int, first: Sequence[int], later: Sequence[int],
                      flip1: Sequence[bool] | None = None, flip3: Sequence[bool] | None = None) -> list[Stage]:
    """Stage 0 uses ``first`` = (n1, n2, n3), stages ≥ 1 use ``later``; flags per stage."""
    flip1 = list(flip1 or [False] * num_stage)
    flip3 = list(flip3 or [False] * num_stage)
    if len(flip1) != num_stage or len(flip3) != num_stage:
        raise ValueError(f"flip1/flip3 need {num_stage} entries, got {len(flip1)} and {len(flip3)}")
    return [Stage(*(first if k == 0 else later), flip1=flip1[k], flip3=flip3[k]) for k in range(num_stage)]


# The per-config iteration tables of the original code (METHOD §1.3).
SCHEDULES: dict[str, list[Stage]] = {
    "car": original_schedule(4, (700, 700, 600), (200, 500, 400)),
    "church": original_schedule(4, (700, 700, 600), (200, 500, 400)),
    "celeba": original_schedule(4, (600, 600, 400), (200, 500, 300), flip3=[True, False, False, False]),
    "cat": original_schedule(4, (600, 600, 400), (200, 500, 300), flip3=[True, False, False, False]),
    "synface": original_schedule(1, (500, 500, 200), (500, 500, 200), flip3=[True]),
    "celeba_pretrain": original_schedule(4, (1500, 1500, 1500), (700, 1000, 1000),
                                         flip1=[False, True, True, True], flip3=[True] * 4),
    "cat_pretrain": original_schedule(4, (1500, 1500, 1500), (700, 1000, 1000),
                                      flip1=[False, True, True, True], flip3=[True] * 4),
    "synface_pretrain": original_schedule(8, (1500, 1500, 1500), (700, 1000, 1000),
                                          flip1=[False] + [True] * 7, flip3=[True] * 8),
    # The replication runs the car schedule for every dataset (EXTENSIONS §2.2).
    "replication": original_schedule(4, (700, 700, 600), (200, 500, 400)),
}


def init_iterations_schedule(n_init_stages: int = 10, n_init_rounds: int = 8,
                             first_step1: int = 700, bridge: Sequence[int] = (1, 700, 600),
                             later: Sequence[int] = (200, 500, 400), n_later: int = 3) -> list[Stage]:
    """The replication's single-image schedule with initialisation iterations (EXTENSIONS §2.4,
    paper Table 2): step 1 only, then ``n_init_stages`` stages of (1, 1, 1) × ``n_init_rounds``
    rounds, then (1, 700, 600), then ``n_later`` × (200, 500, 400)."""
    stages = [Stage(first_step1, 0, 0, rounds=0)]
    stages += [Stage(1, 1, 1, rounds=n_init_rounds) for _ in range(n_init_stages)]
    stages += [Stage(*bridge)] + [Stage(*later) for _ in range(n_later)]
    return stages


def schedule_iterations(schedule: Sequence[Stage]) -> int:
    return sum(st.n1 + st.rounds * (st.n2 + st.n3) for st in schedule)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclass
class MethodConfig:
    """Every constant of the method. Defaults are the original code defaults (METHOD §1.9);
    the dataset presets of :data:`PRESETS` override them."""

    image_size: int = 128
    min_depth: float = 0.9
    max_depth: float = 1.1
    border_depth: float | None = None          # None -> 0.7·max + 0.3·min = 1.04
    fov: float = 10.0
    rot_center_depth: float = 1.0
    xyz_rotation_range: float = 60.0
    xy_translation_range: float = 0.1
    z_translation_range: float = 0.0            # every original config sets 0 (code default 0.1)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    lam_perc: float = 0.5
    lam_smooth: float = 0.01
    lam_regular: float = 0.01
    f1_d: int = 2
    relative_enc: bool = False
    use_mask: bool = True
    add_mean_view: bool = True
    add_mean_light: bool = True
    view_scale: float = 1.0
    rand_light: tuple = DEFAULT_RAND_LIGHT
    n_p: int = 8                                # N_p: pseudo / projected samples per image and iteration (the original's `batchsize`)
    collect_iters: int = 100
    joint_streams: int = 1                      # joint pre-training: P image streams sharing the model (the original's processes)
    crop: int | None = None
    schedule: list[Stage] = field(default_factory=lambda: list(SCHEDULES["car"]))
    prior_iters: int = 1000                     # depth pre-fit iterations when no pretrained netD
    prior_tol: float | None = None              # stop the pre-fit early once MSE < tol (EXTENSIONS §1.7 REC)
    step3_pool: str = "original"                # "original" pool of collect_iters batches | "last_batch" (replication)
    optimizers: str = "recreate"                # "recreate" at every step switch (original) | "persistent" (replication)
    optimizer: str = "adam"                     # "adam" (original) | "radam": no sign-step jolt after a re-creation
    depth_lr_step3: float | None = None         # our option: lr of D in step 3 (None: lr, as the original)
    projection: str = "gan"                     # "gan" | diagnostics "pseudo" / "oracle" (see GAN2Shape.step2)
                                                # themselves (no GAN information) instead of G(w + Δw)
    step3_viewlight: str = "predicted"          # step 3 renders Q in V(Q), L(Q) ("predicted", original) | in
                                                # the view and light of its pseudo sample ("pseudo", diagnostic)
    vl_warmup: int = 0                          # our option: step-3 iterations training only V, L before the first step 3
    net_width: float = 1.0                      # our option: channel multiplier of D, A, V, L, E (1: the original;
                                                # the CPU demo's joint pre-train: 0.25)
    seed: int = 0
    # pytorch3d rasterisation: None = naive on the CPU (pytorch3d has no binned CPU path) and
    # coarse-to-fine on CUDA with pytorch3d's bin size and a per-call count of the fullest bin, so no
    # bin can overflow (same depth as naive, ~8x faster at 128 px); 0 = always naive
    raster_bin_size: int | None = None
    raster_max_faces_per_bin: int | None = None

    def __post_init__(self):
        if self.border_depth is None:
            self.border_depth = 0.7 * self.max_depth + 0.3 * self.min_depth
        if isinstance(self.joint_streams, bool) or not isinstance(self.joint_streams, int) or self.joint_streams < 1:
            raise ValueError(f"joint_streams must be an integer >= 1, got {self.joint_streams!r}")
        if self.step3_pool not in ("original", "last_batch"):
            raise ValueError(f"step3_pool must be 'original' or 'last_batch', got {self.step3_pool!r}")
        if self.projection not in ("gan", "pseudo", "oracle", "mesh_oracle"):
            raise ValueError(f"projection must be 'gan', 'pseudo', 'oracle' or 'mesh_oracle', got {self.projection!r}")
        if self.optimizers not in ("recreate", "persistent"):
            raise ValueError(f"optimizers must be 'recreate' or 'persistent', got {self.optimizers!r}")
        if self.optimizer not in ("adam", "radam"):
            raise ValueError(f"optimizer must be 'adam' or 'radam', got {self.optimizer!r}")
        if self.step3_viewlight not in ("predicted", "pseudo"):
            raise ValueError(f"step3_viewlight must be 'predicted' or 'pseudo', got {self.step3_viewlight!r}")
        if not (isinstance(self.vl_warmup, int) and self.vl_warmup >= 0):
            raise ValueError(f"vl_warmup must be an integer >= 0, got {self.vl_warmup!r}")
        if not (isinstance(self.net_width, (int, float)) and self.net_width > 0):
            raise ValueError(f"net_width must be > 0, got {self.net_width!r}")
        if self.depth_lr_step3 is not None and not self.depth_lr_step3 >= 0:
            raise ValueError(f"depth_lr_step3 must be >= 0, got {self.depth_lr_step3!r}")
        self.schedule = [s if isinstance(s, Stage) else Stage(**s) for s in self.schedule]
        self.rand_light = tuple(self.rand_light)
        self.betas = tuple(self.betas)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["schedule"] = [asdict(s) for s in self.schedule]
        return d


SYNFACE_RAND_LIGHT = (-0.9, 0.9, -0.3, 0.8, -0.1, 0.7, -0.4)

# Per-dataset values of the original configs (METHOD §1.9); everything else = MethodConfig defaults.
PRESETS: dict[str, dict] = {
    "car": dict(image_size=128, n_p=8, use_mask=True, relative_enc=False, schedule=SCHEDULES["car"]),
    "church": dict(image_size=128, n_p=8, use_mask=True, relative_enc=False, schedule=SCHEDULES["church"]),
    "celeba": dict(image_size=128, n_p=16, use_mask=False, relative_enc=True, view_scale=1.2,
                   schedule=SCHEDULES["celeba"]),
    "cat": dict(image_size=128, n_p=16, use_mask=False, relative_enc=True, view_scale=1.2, crop=170,
                schedule=SCHEDULES["cat"]),
    "synface": dict(image_size=64, n_p=16, use_mask=False, relative_enc=True, view_scale=1.2, crop=170,
                    f1_d=8, rand_light=SYNFACE_RAND_LIGHT, schedule=SCHEDULES["synface"]),
    "celeba_pretrain": dict(image_size=128, n_p=8, use_mask=False, relative_enc=True, view_scale=1.2,
                            collect_iters=800, joint_streams=8, schedule=SCHEDULES["celeba_pretrain"]),
    "cat_pretrain": dict(image_size=128, n_p=8, use_mask=False, relative_enc=True, view_scale=1.2,
                         crop=170, collect_iters=800, joint_streams=8, schedule=SCHEDULES["cat_pretrain"]),
    "synface_pretrain": dict(image_size=64, n_p=12, use_mask=False, relative_enc=True, view_scale=1.2,
                             crop=170, f1_d=8, rand_light=SYNFACE_RAND_LIGHT, collect_iters=1000,
                             joint_streams=8, schedule=SCHEDULES["synface_pretrain"]),
    # The replication's settings (EXTENSIONS §2.1, §3.3): λ_perc 1, z range 0.1, persistent
    # optimisers, last-batch step-3 samples, no flips, generic MVNs, car schedule.
    "replication": dict(image_size=128, n_p=16, lam_perc=1.0, z_translation_range=0.1, use_mask=False,
                        relative_enc=False, step3_pool="last_batch", optimizers="persistent",
                        schedule=SCHEDULES["replication"]),
}


def preset(name: str, **overrides) -> MethodConfig:
    """The :class:`MethodConfig` of a dataset preset, with overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return MethodConfig(**{**PRESETS[name], **overrides})


@dataclass
class GeneralizedConfig:
    """The generalized trainer's schedule (EXTENSIONS §2.3–2.4, paper Tables 3–5)."""

    epochs: int = 60
    batch_size: int = 10
    stage: tuple = (13, 22, 18)
    init_epochs: int = 0          # Table 4: 10
    init_stage: tuple = (13, 1, 1)
    init_rounds: int = 8
    prior_epochs: int = 1000
    save_every: int = 20
