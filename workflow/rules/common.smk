# Helpers shared by the rules: the chosen dataset (config/datasets.yaml), the image list, per-image paths.
# (No lambdas in rules: every input function lives here.)
import os
import re
import sys
import shlex
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
# the models: a real dataset's release files; a synthetic family's world (v1: params.yaml `synthetic:`,
# v2: the dataset's own entries)
GAN, VIEW_MVN, LIGHT_MVN = (D.get(k, SYN[k]) if SYNTHETIC else D[k] for k in ("gan", "view_mvn", "light_mvn"))
if SYNTHETIC and not os.path.exists(GAN):
    print(f"gan2shape: {GAN} (the GAN of dataset {DS}) does not exist; world v2's StyleGAN2 is trained on a GPU "
          f"by `WORLD=v2 bash bench/device_train_gan.sh` (docs/world.md)", file=sys.stderr)


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
# instead of a prior; the DAG then has one "prior" called official. A synthetic dataset's committed
# joint pre-train (the synface protocol) is one more start, the "prior" joint, run first and next to the
# priors; its "prior alone" row is the pre-train alone (joint_alone in rules/reconstruct.smk, zero iterations).
# With the preset's `prior_starts: false` (the demo) and a joint start, GAN2Shape runs from the pre-train
# only and the priors are scored alone.
USE_PRETRAIN = bool(D.get("pretrain")) and config["reconstruct"]["official_pretrain"]
OFFICIAL = (not SYNTHETIC) and USE_PRETRAIN
JOINT = SYNTHETIC and USE_PRETRAIN
SCORED = ["official"] if OFFICIAL else ["joint"] * JOINT + list(config["prior"]["names"])  # "prior alone" rows
PRIORS = SCORED if PRESET["prior_starts"] or not JOINT else ["joint"]  # the starts: one run each
FROM_PRETRAIN = ("official", "joint")  # the starts that load all five nets from D["pretrain"]
MASK_PRIORS = [p for p in SCORED if p not in FROM_PRETRAIN]  # built by rule prior from a mask
MASK_CONSTRAINT = "|".join(MASK_PRIORS) or "NO_MASK_PRIORS"


wildcard_constraints:
    image="|".join(IMAGES) if IMAGES else "NO_IMAGES",
    prior="|".join(SCORED),


def image_path(wildcards):
    if SYNTHETIC:
        return f"{ROOT}/{wildcards.image}.png"
    token = TOKEN[wildcards.image]
    sub = D.get("images")
    for cand in (f"{ROOT}/{sub}/{token}" if sub else None, f"{ROOT}/{token}", f"{ROOT}/images/{token}"):
        if cand and os.path.exists(cand):
            return cand
    return f"{ROOT}/{sub}/{token}" if sub else f"{ROOT}/{token}"


def image_wildcard(wildcards):
    """The job's image name (reconstruct's --name)."""
    return wildcards.image


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
    if wildcards.prior in FROM_PRETRAIN:
        return D["pretrain"]
    return f"{RES}/pretrain/{wildcards.prior}/{wildcards.image}.pth"


def net_width(wildcards):
    """--net-width of a reconstruct job: the width its pretrain file was trained with (the dataset's
    pretrain file, or a benchmark-v2 row's joint pre-train), else the original 1."""
    if getattr(wildcards, "prior", None) in FROM_PRETRAIN:
        return D.get("pretrain_net_width", 1)
    run = getattr(wildcards, "run", None)
    if run is not None and B2RUNS[run]["init"] == "joint":
        return config["joint_pretrain"]["net_width"]
    return 1


def prior_depth_path(wildcards):
    """The depth a run starts from, as a map (figures' prior panel): the prior, or the pre-train alone."""
    if wildcards.prior == "joint":
        return f"{RES}/joint_alone/{wildcards.image}/recon_depth.npy"
    return f"{RES}/prior/{wildcards.prior}/{wildcards.image}.npy"


class _W:
    def __init__(self, image):
        self.image = image


class _PW(_W):
    def __init__(self, prior, image):
        super().__init__(image)
        self.prior = prior


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
SEGMENT_NET = D.get("segmenter", SYN["segmenter"]) if SYNTHETIC else D.get("parser", [])
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


def prior_inputs(segment_dir):
    """Input function of a prior rule: the image's mask in ``segment_dir`` (its confidence for the
    confidence priors)."""
    def source(wildcards):
        seg = f"{segment_dir}/{wildcards.image}"
        if wildcards.prior in ("confidence", "smoothed_confidence"):
            return {"conf": f"{seg}_conf.npy"}
        return {"mask": f"{seg}_mask.png"}
    return source


prior_source = prior_inputs(f"{RES}/segment")


def prior_flags(wildcards, input):
    if "conf" in input.keys():
        return f"--confidence {input.conf}"
    return f"--mask {input.mask}"


def evaluate_methods(wildcards=None):
    """LABEL=PATTERN pairs: constant depth, each prior alone, GAN2Shape from each start."""
    methods = ["constant=constant"]
    methods += [f"prior-{p}={prior_depth_path(_PW(p, '{name}'))}" for p in SCORED if p != "official"]
    methods += [f"gan2shape-{p}={RES}/reconstruct/{p}/{{name}}/recon_depth.npy" for p in PRIORS]
    return " ".join(methods)


def evaluate_gt_pattern(wildcards=None):
    """Ground-truth depth path with a {name} placeholder (filled in by `gan2shape evaluate`)."""
    return f"{ROOT}/{{name}}_depth.png" if SYNTHETIC else f"{ROOT}/depth/{{name}}.png"


def evaluate_inputs(wildcards=None):
    files = reconstructions()
    files += [prior_depth_path(_PW(p, n)) for p in SCORED if p != "official" for n in IMAGES]
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

def bench_all_files(pattern):
    """``pattern`` ({family}, {image} placeholders) for the benchmark images of every family."""
    return [pattern.format(family=fam, image=n) for fam in BENCH["families"] for n in BNAMES[fam]]

def bench_image(wildcards):
    return f"{BROOT}/{wildcards.family}/{wildcards.image}.png"

def bench_gt(wildcards):
    return f"{BROOT}/{wildcards.family}/{wildcards.image}_depth.png"

def bench_gt_flag(wildcards):
    return f"--gt-depth {bench_gt(wildcards)}"

bench_prior_source = prior_inputs(f"{BW}/segment")

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
    """The job's index: its (prior, image) position in the dataset's DAG (benchmark images: by name;
    joint_alone, which has no prior wildcard: its image's joint run's, so both use the same GPU)."""
    return job_index(wildcards.image, IMAGES, getattr(wildcards, "prior", "joint"), PRIORS)


def reconstruct_device(wildcards):
    """--device of the job: cuda:<gpus[i mod G]> with gpus given, else params.yaml's device."""
    return device_of(reconstruct_index(wildcards), config["device"], GPUS)


def _gpu_slot(wildcards, gpu, index):
    return gpu_resources(index(wildcards), GPUS)[f"gpu_{gpu}"]


def gpu_slots(index):
    """The per-GPU resources gpu_<id> of the jobs whose index (gan2shape.sharding) is index(wildcards)."""
    return {f"gpu_{d}": functools.partial(_gpu_slot, gpu=d, index=index) for d in GPUS}


GPU_SLOTS = gpu_slots(reconstruct_index)


# The world-v2 benchmark (rules/benchmark_v2.smk), when a `benchmark_v2:` section is given
# (--configfile config/benchmark_v2.yaml): the first N held-out images of each family; every enabled
# row of `runs` (and of the N_p sweep) on its families, in jobs of the recipe's `group` images (units
# g00, g01, ...; a unit's folder holds one <image>/ result folder per image).
B2 = config.get("benchmark_v2")


def bench2_figures(b):
    """{family: the run its figure shows}, for the benchmarked families only (a subset config may name
    fewer families than the figure entries it inherits)."""
    return {fam: key for fam, key in b["figure"]["runs"].items() if fam in b["families"]}


def bench2_plan(b):
    """The enabled GAN2Shape rows {method key: settings}, the N_p sweep's included. Settings: the
    recipe's (preset, schedule, np, group, init, mask, flags), the row's prior, independent, np,
    families, run_flags, and jobs: the row whose jobs make its files (itself; the swept run for the
    sweep's value equal to that run's N_p)."""
    runs = {}
    for key, r in b["runs"].items():
        if not r["enabled"]:
            continue
        where = f"benchmark_v2.runs.{key}"
        if r["recipe"] not in b["recipes"]:
            raise ValueError(f"{where}: recipe {r['recipe']!r} is not in benchmark_v2.recipes ({', '.join(b['recipes'])})")
        rec = b["recipes"][r["recipe"]]
        if rec["init"] == "prior" and "prior" not in r:
            raise ValueError(f"{where}: recipe {r['recipe']} pre-fits the depth to a prior (init: prior); give prior:")
        if rec["init"] == "joint" and "prior" in r:
            raise ValueError(f"{where}: recipe {r['recipe']} starts from joint_pretrain (init: joint); drop prior:")
        if rec["init"] == "prior" and rec["group"] != 1:
            raise ValueError(f"benchmark_v2.recipes.{r['recipe']}: init: prior needs group: 1 (one pre-fitted "
                             f"depth net per job), got group: {rec['group']}")
        if not set(r["families"]) <= set(b["families"]):
            raise ValueError(f"{where}: families {r['families']} are not all in benchmark_v2.families {b['families']}")
        runs[key] = {**rec, "recipe": r["recipe"], "prior": r.get("prior"), "independent": r.get("independent", False),
                     "np": r.get("np", rec["np"]), "families": r["families"], "run_flags": r["flags"], "jobs": key}
    sweep = b["np_sweep"]
    if sweep["run"]:
        if sweep["run"] not in runs:
            raise ValueError(f"benchmark_v2.np_sweep.run: {sweep['run']!r} is not an enabled run ({', '.join(runs)}); "
                             f"run: \"\" for no sweep")
        base = runs[sweep["run"]]
        fams = sweep.get("families") or base["families"]
        if not set(fams) <= set(base["families"]):
            raise ValueError(f"benchmark_v2.np_sweep.families: {fams} are not all families of {sweep['run']} "
                             f"({base['families']})")
        for n in sweep["np"]:
            key = f"{sweep['run']}-np{n}"
            if key in runs:
                raise ValueError(f"benchmark_v2.np_sweep: row {key} is also in benchmark_v2.runs")
            runs[key] = {**base, "np": n, "families": fams, "jobs": sweep["run"] if n == base["np"] else key}
    for fam, key in bench2_figures(b).items():
        if key not in runs or fam not in runs[key]["families"]:
            raise ValueError(f"benchmark_v2.figure.runs.{fam}: {key!r} is not an enabled run on {fam}")
    return runs


def bench2_names(b):
    """{family: the first N names of its list.txt}, with a clear error when the test set lacks them."""
    names = {}
    for fam in b["families"]:
        lst = f"{b['test_set']}/{fam}/list.txt"
        have = _read_list(lst)
        if len(have) < b["images"]:
            raise ValueError(f"benchmark_v2.images = {b['images']}, but {lst} lists {len(have)} images "
                             f"(the world-v2 test set: docs/world.md)")
        names[fam] = have[: b["images"]]
    return names


if B2:
    B2W, B2T = B2["work"], B2["test_set"]
    B2NAMES = bench2_names(B2)
    B2RUNS = bench2_plan(B2)
    B2JOBS = [k for k, r in B2RUNS.items() if r["jobs"] == k]  # the rows that run jobs
    B2PRIORS = sorted(set(B2["priors"].values()) | {r["prior"] for r in B2RUNS.values() if r["prior"]})
    B2UNITS = [f"{fam}/g{i:02d}" for fam in B2["families"] for i in range(B2["images"])]
    bench2_prior_source = prior_inputs(f"{B2W}/segment")


def bench2_all_names(wildcards=None):
    return [n for fam in B2["families"] for n in B2NAMES[fam]]


def bench2_all_images(wildcards=None):
    return [f"{B2T}/{fam}/{n}.png" for fam in B2["families"] for n in B2NAMES[fam]]


def bench2_family_of(image):
    return next(fam for fam, names in B2NAMES.items() if image in names)


def bench2_image(wildcards):
    return f"{B2T}/{bench2_family_of(wildcards.image)}/{wildcards.image}.png"


def bench2_units(key, fam):
    """{unit: its images} of row ``key`` on ``fam``: the first N images in jobs of ``group``."""
    g = B2RUNS[key]["group"]
    names = B2NAMES[fam]
    return {f"g{i // g:02d}": names[i:i + g] for i in range(0, len(names), g)}


def bench2_unit_dirs(key, fam):
    """The output folders of the jobs that make row ``key`` on ``fam``."""
    jobs = B2RUNS[key]["jobs"]
    return [f"{B2W}/{fam}/{jobs}/reconstruct/{u}" for u in bench2_units(jobs, fam)]


def bench2_members(wildcards):
    return bench2_units(wildcards.run, wildcards.family)[wildcards.group]


def bench2_test_files(suffix):
    """Input function: the job's images' test-set files ``<name><suffix>``."""
    def files(wildcards):
        return [f"{B2T}/{wildcards.family}/{n}{suffix}" for n in bench2_members(wildcards)]
    return files


def bench2_latents(wildcards):
    return [f"{B2W}/invert/{n}.pt" for n in bench2_members(wildcards)]


def bench2_masks(wildcards):
    if not B2RUNS[wildcards.run]["mask"]:
        return []
    return [f"{B2W}/segment/{n}_mask.png" for n in bench2_members(wildcards)]


def bench2_pretrain(wildcards):
    """The nets a job starts from: the joint pre-train (init: joint), or its image's depth net
    pre-fitted to the run's prior (init: prior; one image per job)."""
    r = B2RUNS[wildcards.run]
    if r["init"] == "joint":
        return JOINT_PRETRAIN
    (image,) = bench2_members(wildcards)
    return f"{B2W}/pretrain/{r['prior']}/{image}.pth"


def bench2_names_flag(wildcards):
    return " ".join(bench2_members(wildcards))


def bench2_out(wildcards, output):
    """--out: the unit folder (several images or independent models write <out>/<name>/), or
    <unit>/<name> for one image sharing its model (reconstruct writes it to --out itself)."""
    members = bench2_members(wildcards)
    if len(members) > 1 or B2RUNS[wildcards.run]["independent"]:
        return output.run
    return f"{output.run}/{members[0]}"


def bench2_preset(wildcards):
    return B2RUNS[wildcards.run]["preset"]


def bench2_np(wildcards):
    return B2RUNS[wildcards.run]["np"]


def bench2_schedule(wildcards):
    return f"--schedule {B2RUNS[wildcards.run]['schedule']}"


def bench2_gt_flag(wildcards, input):
    return f"--gt-depth {' '.join(input.gt)}"


def bench2_flags(wildcards, input):
    """The row's further reconstruct flags: scene records, masks (recipes with mask: true),
    --independent, then the recipe's, the benchmark's and the row's own flags (later ones win)."""
    r = B2RUNS[wildcards.run]
    flags = [f"--scene {' '.join(input.scene)}"]
    if r["mask"]:
        flags.append(f"--mask {' '.join(input.mask)}")
    if r["independent"]:
        flags.append("--independent")
    flags += [r["flags"], B2["flags"], r["run_flags"]]
    return " ".join(f for f in flags if f)


def bench2_index(wildcards):
    """The job's index for the GPU assignment: its (row, family/unit) position."""
    return job_index(f"{wildcards.family}/{wildcards.group}", B2UNITS, wildcards.run, B2JOBS)


def bench2_device(wildcards):
    return device_of(bench2_index(wildcards), config["device"], GPUS)


def bench2_rows(fam):
    """The GAN2Shape rows evaluated on ``fam``."""
    return [k for k, r in B2RUNS.items() if fam in r["families"]]


def bench2_evaluate_inputs(wildcards):
    fam = wildcards.family
    priors = [f"{B2W}/prior/{p}/{n}.npy" for p in B2["priors"].values() for n in B2NAMES[fam]]
    runs = [d for k in bench2_rows(fam) for d in bench2_unit_dirs(k, fam)]
    return priors + list(dict.fromkeys(runs))


def bench2_gts(wildcards):
    return [f"{B2T}/{wildcards.family}/{n}_depth.png" for n in B2NAMES[wildcards.family]]


def bench2_names_list(wildcards):
    return " ".join(B2NAMES[wildcards.family])


def bench2_gt_pattern(wildcards):
    return f"{B2T}/{wildcards.family}/{{name}}_depth.png"


def bench2_methods(wildcards):
    """LABEL=PATTERN pairs (shell-quoted): the baselines, each prior alone, every GAN2Shape row (its
    unit folder unknown to the pattern: *)."""
    fam = wildcards.family
    labels = {"constant": "constant", "average_gt": "average"}
    methods = [f"{b}={labels[b]}" for b in B2["baselines"]]
    methods += [f"prior-{label}={B2W}/prior/{p}/{{name}}.npy" for label, p in B2["priors"].items()]
    methods += [f"{k}={B2W}/{fam}/{B2RUNS[k]['jobs']}/reconstruct/*/{{name}}/recon_depth.npy" for k in bench2_rows(fam)]
    return " ".join(shlex.quote(m) for m in methods)


def bench2_evaluations(wildcards=None):
    return {fam: f"{B2W}/{fam}/evaluation.json" for fam in B2["families"]}


def bench2_table_flags(wildcards, input):
    return " ".join(shlex.quote(f"{fam}={path}") for fam, path in bench2_evaluations().items())


def bench2_table_note(wildcards=None):
    return shlex.quote(f"first {B2['images']} held-out images per family; priors and masks from "
                       f"{SEGMENT_NET}; rows: config/benchmark_v2.yaml")


def bench2_figure_items(wildcards):
    """(image, unit folder of its result) of the family's figure: its first `figure.images` images."""
    fam, key = wildcards.family, B2["figure"]["runs"][wildcards.family]
    jobs = B2RUNS[key]["jobs"]
    unit_of = {n: u for u, names in bench2_units(jobs, fam).items() for n in names}
    shown = B2NAMES[fam][: B2["figure"]["images"]]
    return [(n, f"{B2W}/{fam}/{jobs}/reconstruct/{unit_of[n]}") for n in shown]


def bench2_figure_units(wildcards):
    return list(dict.fromkeys(u for _, u in bench2_figure_items(wildcards)))


def bench2_figure_files(suffix):
    """Input function: the test-set files ``<name><suffix>`` of the figure's images."""
    def files(wildcards):
        return [f"{B2T}/{wildcards.family}/{n}{suffix}" for n, _ in bench2_figure_items(wildcards)]
    return files


def bench2_figure_priors(wildcards):
    prior = B2RUNS[B2["figure"]["runs"][wildcards.family]]["prior"]
    return [f"{B2W}/prior/{prior}/{n}.npy" for n, _ in bench2_figure_items(wildcards)] if prior else []


def bench2_figure_dirs(wildcards):
    return " ".join(f"{u}/{n}" for n, u in bench2_figure_items(wildcards))


def bench2_figure_names(wildcards):
    return " ".join(n for n, _ in bench2_figure_items(wildcards))


def bench2_figure_prior_flag(wildcards, input):
    return f"--prior-depth {' '.join(input.priors)}" if input.priors else ""


def bench2_figure_label(wildcards):
    return shlex.quote(f"{B2['figure']['runs'][wildcards.family]} depth")
