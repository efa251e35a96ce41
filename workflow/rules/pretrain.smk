# The joint pre-train of the original synface protocol (METHOD §1.5, §1.6, §8.1) from the dataset's GAN:
# GAN samples with their W latents, the first sample's ellipsoid prior seeding the depth net, P image
# streams sharing one model. `snakemake results/pretrain/<dataset>/pretrain.pth` (or `joint_pretrain`),
# or in `all` for a dataset with `joint_pretrain: true` in config/datasets.yaml. Resumable: an
# interrupted job (killed, or stopped by max_seconds with exit status 3) continues from its checkpoint
# when run again.
JP = config["joint_pretrain"]
JPD = f"results/pretrain/{DS}"
JP_FIRST = "000000"  # the first sample's name (gan2shape sample-gan)
JP_SCHEDULE = " ".join(
    f"--{flag} {JP[key]}"
    for flag, key in (("num-stages", "num_stages"), ("collect-iters", "collect_iters"), ("prior-iters", "prior_iters"))
    if JP[key] is not None
) + (f" --stage-iters {','.join(str(v) for v in JP['stage_iters'])}" if JP["stage_iters"] else "")


rule sample_gan:
    """GAN samples with their W latents and a list: the joint pre-train's training images."""
    conda:
        ENV
    input:
        gan=GAN,
    output:
        lst=f"{JPD}/samples/list.txt",
        first=f"{JPD}/samples/{JP_FIRST}.png",
    params:
        out=out_dir,
        n=JP["images"],
        truncation=JP["truncation"],
        size=f"--size {JP['sample_size']}" if JP["sample_size"] else "",
        seed=config["seed"],
        device=config["device"],
    resources:
        gpu=1,
    log:
        f"{JPD}/logs/sample_gan.log",
    shell:
        "gan2shape sample-gan --gan {input.gan} --n {params.n} --truncation {params.truncation} {params.size} "
        "--seed {params.seed} --device {params.device} --out {params.out} > {log} 2>&1"


rule pretrain_mask:
    """The object mask of the first sample, for its prior."""
    conda:
        ENV
    input:
        images=f"{JPD}/samples/{JP_FIRST}.png",
        net=SEGMENT_NET,
    output:
        mask=f"{JPD}/segment/{JP_FIRST}_mask.png",
    params:
        out=out_dir,
        **SEGMENT_PARAMS,
    resources:
        gpu=1,
    log:
        f"{JPD}/logs/segment.log",
    shell:
        SEGMENT_SHELL


rule pretrain_prior:
    """The first sample's ellipsoid prior: the depth net is pre-fitted to it once."""
    conda:
        ENV
    input:
        mask=f"{JPD}/segment/{JP_FIRST}_mask.png",
    output:
        npy=f"{JPD}/prior_{JP_FIRST}.npy",
    params:
        size=D["size"],
        category=config["prior"]["category"],
    log:
        f"{JPD}/logs/prior.log",
    shell:
        "gan2shape prior --name ellipsoid --mask {input.mask} --image-size {params.size} "
        "--category {params.category} --out {output.npy} > {log} 2>&1"


rule joint_pretrain:
    """D, A, V, L, E trained jointly on the samples by P streams (resumable); an official pretrain file."""
    conda:
        ENV
    input:
        lst=f"{JPD}/samples/list.txt",
        prior=f"{JPD}/prior_{JP_FIRST}.npy",
        gan=GAN,
        view_mvn=VIEW_MVN,
        light_mvn=LIGHT_MVN,
    output:
        pth=JOINT_PRETRAIN,
        loss_log=f"{JPD}/pretrain_log.json",
    params:
        checkpoint=f"{JPD}/pretrain.ckpt",
        every=JP["checkpoint_every"],
        max_seconds=f"--stop-after-seconds {JP['max_seconds']}" if JP["max_seconds"] else "",
        preset=JP["preset"],
        streams=JP["streams"],
        size=D["size"],
        crop="--crop 0" if SYNTHETIC else "",
        schedule=JP_SCHEDULE,
        perceptual=config["reconstruct"]["perceptual"],
        vgg=f"--vgg {config['reconstruct']['vgg']}" if config["reconstruct"]["perceptual"] == "lpips_vgg" else "",
        seed=config["seed"],
        device=config["device"],
        mode=config["mode"],
        width=JP["net_width"],
    resources:
        gpu=1,
    log:
        f"{JPD}/logs/joint_pretrain.log",
    benchmark:
        f"{JPD}/benchmarks/joint_pretrain.tsv"
    shell:
        "gan2shape pretrain --list {input.lst} --first-prior {input.prior} --preset {params.preset} "
        "--streams {params.streams} --image-size {params.size} {params.crop} {params.schedule} "
        "--gan {input.gan} --view-mvn {input.view_mvn} --light-mvn {input.light_mvn} "
        "--perceptual {params.perceptual} {params.vgg} --net-width {params.width} --seed {params.seed} --device {params.device} --mode {params.mode} "
        "--checkpoint {params.checkpoint} --checkpoint-every {params.every} {params.max_seconds} "
        "--log {output.loss_log} --progress --out {output.pth} > {log} 2>&1"
