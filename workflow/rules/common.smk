# Helpers shared by the rules: the chosen dataset (config/datasets.yaml), the image list, per-image paths.
# (No lambdas in rules: every input function lives here.)
import os
from pathlib import Path

DS = config["dataset"]
PRESET = config["presets"][config["preset"]]
RES = f"results/{DS}"
SYN = config["synthetic"]

ENV = "../envs/gan2shape.yaml"  # the conda environment of every rule (`--sdm conda`)
D = DATASETS[DS]
SYNTHETIC = D["kind"] == "synthetic"

ROOT, LIST = D["root"], f"{D['root']}/{D['list']}"
GT = D["gt_encoding"] is not None  # ground-truth depth: the synthetic world, synface
if SYNTHETIC:
    GAN, VIEW_MVN, LIGHT_MVN = SYN["gan"], SYN["view_mvn"], SYN["light_mvn"]
else:
    GAN, VIEW_MVN, LIGHT_MVN = D["gan"], D["view_mvn"], D["light_mvn"]


def _read_list(path):
    """Image tokens of a list file (first whitespace-separated token per line); [] before download."""
    if not os.path.exists(path):
        return []
    return [line.split()[0] for line in Path(path).read_text().splitlines() if line.strip()]


TOKENS = _read_list(LIST)
if PRESET["images"]:
    TOKENS = TOKENS[: PRESET["images"]]
IMAGES = [Path(t).stem for t in TOKENS]
TOKEN = dict(zip(IMAGES, TOKENS))

# With a released joint-pretraining checkpoint (celeba, cat, synface) the original starts from it
# instead of a prior; the DAG then has one "prior" called official.
OFFICIAL = (not SYNTHETIC) and D.get("pretrain") and config["reconstruct"]["official_pretrain"]
PRIORS = ["official"] if OFFICIAL else list(config["prior"]["names"])


wildcard_constraints:
    image="|".join(IMAGES) if IMAGES else "NO_IMAGES",
    prior="|".join(PRIORS),


def image_path(wildcards):
    if SYNTHETIC:
        return f"{ROOT}/{wildcards.image}.png"
    token = TOKEN[wildcards.image]
    sub = D.get("images")
    for cand in (f"{ROOT}/{sub}/{token}" if sub else None, f"{ROOT}/{token}", f"{ROOT}/images/{token}"):
        if cand and os.path.exists(cand):
            return cand
    return f"{ROOT}/{sub}/{token}" if sub else f"{ROOT}/{token}"


def latent_path(wildcards):
    if SYNTHETIC:
        return f"{RES}/invert/{wildcards.image}.pt"
    return f"{ROOT}/latents/{wildcards.image}.pt"


def gt_depth_path(wildcards):
    """Ground-truth depth (synthetic world, synface) or [] when the dataset has none."""
    if SYNTHETIC:
        return f"{ROOT}/{wildcards.image}_depth.png"
    if GT:
        return image_path(wildcards).replace("image", "depth")
    return []


def gt_flag(wildcards):
    gt = gt_depth_path(wildcards)
    return f"--gt-depth {gt}" if gt else ""


def pretrain_path(wildcards):
    if wildcards.prior == "official":
        return D["pretrain"]
    return f"{RES}/pretrain/{wildcards.prior}/{wildcards.image}.pth"


class _W:
    def __init__(self, image):
        self.image = image


def all_images(wildcards=None):
    return [image_path(_W(n)) for n in IMAGES]


def stage_flags():
    """Schedule flags of the chosen preset (empty when the dataset's original schedule applies)."""
    flags = []
    if PRESET["stage_iters"]:
        flags += ["--stage-iters", ",".join(str(v) for v in PRESET["stage_iters"])]
    if PRESET["num_stages"]:
        flags += ["--num-stages", str(PRESET["num_stages"])]
    if PRESET["collect_iters"]:
        flags += ["--collect-iters", str(PRESET["collect_iters"])]
    return " ".join(flags)


def reconstructions():
    return expand(f"{RES}/reconstruct/{{prior}}/{{image}}/metrics.json", prior=PRIORS, image=IMAGES)


def all_targets():
    if not IMAGES:  # real dataset not downloaded yet: fetch it first, then run again
        return [LIST]
    return [f"{RES}/metrics.json", "results/metrics.json", "results/report/index.html"] + (
        [JOINT_PRETRAIN] if D.get("joint_pretrain") else []
    )


# The dataset's segmentation command (rule segment; the joint pre-train's first sample).
SEGMENT_NET = SYN["segmenter"] if SYNTHETIC else D.get("parser", [])
SEGMENT_PARAMS = dict(
    command="segment" if SYNTHETIC else f"segment-real --category {D.get('parse')}",
    size=D["size"],
    parser_size=f"--parser-size {config['segment']['parser_size']}" if SYNTHETIC else "",
    faithful="" if SYNTHETIC else ("--faithful" if config["segment"]["faithful"] else "--no-faithful"),
    confidence=config["segment"]["confidence"],
    device=config["device"],
)
SEGMENT_SHELL = (
    "gan2shape {params.command} --checkpoint {input.net} --images {input.images} --image-size {params.size} "
    "{params.parser_size} {params.faithful} --confidence {params.confidence} --device {params.device} "
    "--out-dir {params.out} > {log} 2>&1"
)

# The joint pre-train (rules/pretrain.smk): in `all` only for a dataset that asks for it.
JOINT_PRETRAIN = f"results/pretrain/{DS}/pretrain.pth"


def prior_source(wildcards):
    if wildcards.prior in ("confidence", "smoothed_confidence"):
        return {"conf": f"{RES}/segment/{wildcards.image}_conf.npy"}
    return {"mask": f"{RES}/segment/{wildcards.image}_mask.png"}


def prior_flags(wildcards, input):
    if "conf" in input.keys():
        return f"--confidence {input.conf}"
    return f"--mask {input.mask}"


def evaluate_methods(wildcards=None):
    """LABEL=PATTERN pairs: constant depth, each prior alone, GAN2Shape with each prior."""
    methods = ["constant=constant"]
    methods += [f"prior-{p}={RES}/prior/{p}/{{name}}.npy" for p in PRIORS if p != "official"]
    methods += [f"gan2shape-{p}={RES}/reconstruct/{p}/{{name}}/recon_depth.npy" for p in PRIORS]
    return " ".join(methods)


def evaluate_gt_pattern(wildcards=None):
    """Ground-truth depth path with a {name} placeholder (filled in by `gan2shape evaluate`)."""
    return f"{ROOT}/{{name}}_depth.png" if SYNTHETIC else f"{ROOT}/depth/{{name}}.png"


def evaluate_inputs(wildcards=None):
    files = reconstructions()
    files += expand(f"{RES}/prior/{{prior}}/{{image}}.npy", prior=[p for p in PRIORS if p != "official"],
                    image=IMAGES)
    return files


def out_dir(wildcards, output):
    """The folder of a rule's first output (lint: no hard-coded output prefixes)."""
    return os.path.dirname(output[0])


def run_dir(wildcards, input):
    """The reconstruct folder of a figures job."""
    return os.path.dirname(input.run)


def evaluated_list(wildcards, output):
    return os.path.join(os.path.dirname(output.json), "evaluated.txt")


# The synthetic benchmark (rules/benchmark.smk), when a `benchmark:` section is given
# (--configfile config/benchmark.yaml): the first N held-out images of each family.
BENCH = config.get("benchmark")
BW = "results/benchmark"  # its working files
BROOT = "data/synthetic/test"
if BENCH:
    BNAMES = {fam: _read_list(f"{BROOT}/{fam}/list.txt")[: BENCH["images"]] for fam in ("face", "box")}
    BPRIORS = sorted(set(BENCH["priors"]) | set(BENCH["baselines"].values()))


def bench_files(fam, pattern):
    """``pattern`` ({image} placeholder) for the family's benchmark images."""
    return [pattern.format(image=n) for n in BNAMES[fam]]

def bench_image(wildcards):
    return f"{BROOT}/{wildcards.family}/{wildcards.image}.png"

def bench_gt(wildcards):
    return f"{BROOT}/{wildcards.family}/{wildcards.image}_depth.png"

def bench_gt_flag(wildcards):
    return f"--gt-depth {bench_gt(wildcards)}"

def bench_prior_source(wildcards):
    seg = f"{BW}/{wildcards.family}/segment/{wildcards.image}"
    if wildcards.prior in ("confidence", "smoothed_confidence"):
        return {"conf": f"{seg}_conf.npy"}
    return {"mask": f"{seg}_mask.png"}

def bench_run_flags(wildcards):
    scene = f"{BROOT}/{wildcards.family}/{wildcards.image}.json"
    return f"--scene {scene} {BENCH['flags']}"

def bench_evaluate_inputs(wildcards):
    fam, name = wildcards.family, BENCH["name"]
    runs = [f"{BW}/{fam}/{name}/reconstruct/{p}/{n}/metrics.json" for p in BENCH["priors"] for n in BNAMES[fam]]
    priors = [f"{BW}/{fam}/prior/{p}/{n}.npy" for p in BENCH["baselines"].values() for n in BNAMES[fam]]
    return runs + priors

def bench_gts(wildcards):
    return bench_files(wildcards.family, f"{BROOT}/{wildcards.family}/{{image}}_depth.png")

def bench_names(wildcards):
    return " ".join(BNAMES[wildcards.family])

def bench_names_file(wildcards, output):
    return f"{BW}/{wildcards.family}/{BENCH['name']}_evaluated.txt"

def bench_gt_pattern(wildcards):
    return f"{BROOT}/{wildcards.family}/{{name}}_depth.png"

def bench_methods(wildcards):
    """LABEL=PATTERN pairs: constant depth, each baseline prior alone, GAN2Shape with each prior."""
    fam, name = wildcards.family, BENCH["name"]
    methods = ["constant=constant"]
    methods += [f"prior-{label}={BW}/{fam}/prior/{p}/{{name}}.npy" for label, p in BENCH["baselines"].items()]
    methods += [f"gan2shape-{p}={BW}/{fam}/{name}/reconstruct/{p}/{{name}}/recon_depth.npy" for p in BENCH["priors"]]
    return " ".join(methods)

def bench_dataset(wildcards):
    return f"synthetic-{wildcards.family}"


# Several GPUs (params.yaml `gpus`): reconstruct job i (gan2shape.sharding.job_index) runs on
# gpus[i mod G] and claims resource gpu_<id>.
GPUS = [int(g) for g in config["gpus"]]


def reconstruct_index(wildcards):
    """The job's index: its (prior, image) position in the dataset's DAG (benchmark images: by name)."""
    return job_index(wildcards.image, IMAGES, wildcards.prior, PRIORS)


def reconstruct_device(wildcards):
    """--device of the job: cuda:<gpus[i mod G]> with gpus given, else params.yaml's device."""
    return device_of(reconstruct_index(wildcards), config["device"], GPUS)


def _gpu_slot(wildcards, gpu):
    return gpu_resources(reconstruct_index(wildcards), GPUS)[f"gpu_{gpu}"]


GPU_SLOTS = {f"gpu_{d}": functools.partial(_gpu_slot, gpu=d) for d in GPUS}
