# GAN2Shape per image (one job per image and prior; resumable from its checkpoint).
# Several GPUs (params.yaml `gpus`): job i (gan2shape.sharding.job_index) runs on gpus[i mod G] and
# claims resource gpu_<id>; `--resources gpu=G gpu_0=1 gpu_1=1 ...` runs one job per GPU at a time.
rule reconstruct:
    """Recover depth, albedo, view and light of one image (instance-specific training)."""
    conda:
        ENV
    input:
        image=image_path,
        latent=latent_path,
        pretrain=pretrain_path,
        gt=gt_depth_path,
        gan=GAN,
        view_mvn=VIEW_MVN,
        light_mvn=LIGHT_MVN,
    output:
        depth=f"{RES}/reconstruct/{{prior}}/{{image}}/depth.npy",
        recon_depth=f"{RES}/reconstruct/{{prior}}/{{image}}/recon_depth.npy",
        albedo=f"{RES}/reconstruct/{{prior}}/{{image}}/albedo.npy",
        view=f"{RES}/reconstruct/{{prior}}/{{image}}/view.json",
        light=f"{RES}/reconstruct/{{prior}}/{{image}}/light.json",
        metrics=f"{RES}/reconstruct/{{prior}}/{{image}}/metrics.json",
        loss_log=f"{RES}/reconstruct/{{prior}}/{{image}}/log.json",
    params:
        out=out_dir,
        names=image_wildcard,
        checkpoint=f"{RES}/checkpoints/{{prior}}/{{image}}.ckpt",
        preset=D["preset"],
        size=D["size"],
        crop="--crop 0" if SYNTHETIC else "",
        np=config["np"],
        schedule=stage_flags(),
        gt=gt_flag,
        gt_encoding=D["gt_encoding"] or "unsup3d",
        perceptual=config["reconstruct"]["perceptual"],
        vgg=f"--vgg {config['reconstruct']['vgg']}" if config["reconstruct"]["perceptual"] == "lpips_vgg" else "",
        step3_pool=config["reconstruct"]["step3_pool"],
        optimizers=config["reconstruct"]["optimizers"],
        optimizer=config["reconstruct"]["optimizer"],
        bins="" if config["reconstruct"]["raster_bin_size"] == "auto" else f"--raster-bin-size {config['reconstruct']['raster_bin_size']}",
        every=config["reconstruct"]["checkpoint_every"],
        flags="",  # further reconstruct flags (the synthetic benchmark adds its own)
        seed=config["seed"],
        device=reconstruct_device,
        mode=config["mode"],
        width=net_width,
    resources:
        gpu=1,
        **GPU_SLOTS,
    log:
        f"{RES}/logs/reconstruct/{{prior}}/{{image}}.log",
    benchmark:
        f"{RES}/benchmarks/reconstruct/{{prior}}/{{image}}.tsv"
    shell:
        "gan2shape reconstruct --preset {params.preset} --image-size {params.size} {params.crop} "
        "--np {params.np} {params.schedule} --image {input.image} --latent {input.latent} "
        "--pretrain {input.pretrain} {params.gt} "
        "--gt-encoding {params.gt_encoding} --name {params.names} "
        "--gan {input.gan} --view-mvn {input.view_mvn} --light-mvn {input.light_mvn} "
        "--perceptual {params.perceptual} {params.vgg} --step3-pool {params.step3_pool} "
        "--optimizers {params.optimizers} --optimizer {params.optimizer} {params.bins} --net-width {params.width} --seed {params.seed} "
        "--device {params.device} --mode {params.mode} --checkpoint {params.checkpoint} --checkpoint-every {params.every} "
        "{params.flags} --progress --out {params.out} > {log} 2>&1"


# The pre-train alone (the joint start's "prior alone" row and prior panel): the same command with zero
# iterations, so the depth is the pre-trained networks' prediction in the input view.
use rule reconstruct as joint_alone with:
    input:
        image=image_path,
        latent=latent_path,
        pretrain=D.get("pretrain") or [],
        gt=gt_depth_path,
        gan=GAN,
        view_mvn=VIEW_MVN,
        light_mvn=LIGHT_MVN,
    output:
        depth=f"{RES}/joint_alone/{{image}}/depth.npy",
        recon_depth=f"{RES}/joint_alone/{{image}}/recon_depth.npy",
        albedo=f"{RES}/joint_alone/{{image}}/albedo.npy",
        view=f"{RES}/joint_alone/{{image}}/view.json",
        light=f"{RES}/joint_alone/{{image}}/light.json",
        metrics=f"{RES}/joint_alone/{{image}}/metrics.json",
        loss_log=f"{RES}/joint_alone/{{image}}/log.json",
    params:
        checkpoint=f"{RES}/checkpoints/joint_alone/{{image}}.ckpt",
        schedule="--stage-iters 0,0,0",
        width=D.get("pretrain_net_width", 1),
    log:
        f"{RES}/logs/joint_alone/{{image}}.log",
    benchmark:
        f"{RES}/benchmarks/joint_alone/{{image}}.tsv"
