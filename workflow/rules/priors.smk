# Shape priors from masks / confidences, and the depth net pre-fitted to each prior.


rule prior:
    """One image's depth prior (ellipsoid, masked/smoothed box, confidence) from its mask."""
    conda:
        ENV
    input:
        unpack(prior_source),
    output:
        npy=f"{RES}/prior/{{prior}}/{{image}}.npy",
        png=f"{RES}/prior/{{prior}}/{{image}}.png",
    params:
        source=prior_flags,
        size=D["size"],
        category=config["prior"]["category"],
        compat="--compat" if config["prior"]["compat"] else "",
    log:
        f"{RES}/logs/prior/{{prior}}/{{image}}.log",
    wildcard_constraints:
        prior=MASK_CONSTRAINT,
    shell:
        "gan2shape prior --name {wildcards.prior} {params.source} --image-size {params.size} "
        "--category {params.category} {params.compat} --out {output.npy} --png {output.png} > {log} 2>&1"


rule pretrain_depth:
    """Pre-fit the depth net of one image to its prior (written as an official pretrain file)."""
    conda:
        ENV
    input:
        image=image_path,
        prior=f"{RES}/prior/{{prior}}/{{image}}.npy",
    output:
        pth=f"{RES}/pretrain/{{prior}}/{{image}}.pth",
    params:
        size=D["size"],
        iters=PRESET["prior_iters"],
        seed=config["seed"],
        device=config["device"],
    log:
        f"{RES}/logs/pretrain/{{prior}}/{{image}}.log",
    wildcard_constraints:
        prior=MASK_CONSTRAINT,
    benchmark:
        f"{RES}/benchmarks/pretrain/{{prior}}/{{image}}.tsv"
    resources:
        gpu=1,  # device cuda: seconds per image instead of minutes on one CPU thread
    shell:
        "gan2shape pretrain-depth --image {input.image} --prior {input.prior} --image-size {params.size} "
        "--iters {params.iters} --seed {params.seed} --device {params.device} --out {output.pth} > {log} 2>&1"
