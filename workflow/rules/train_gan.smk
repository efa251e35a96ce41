# Training the synthetic world's StyleGAN2 (explicit target only: the DAG uses the committed GAN).


rule train_gan:
    """StyleGAN2 on on-the-fly synthetic renders; resumable; `snakemake train_gan` to run."""
    conda:
        ENV
    output:
        gan=f"{config['train_gan']['out_dir']}/synthetic_gan.pt",
    params:
        out=out_dir,
        steps=config["train_gan"]["steps"],
        pool=config["train_gan"]["pool"],
        r1=config["train_gan"]["r1"],
        max_seconds=(
            f"--max-seconds {config['train_gan']['max_seconds']}" if config["train_gan"]["max_seconds"] else ""
        ),
        seed=config["seed"],
        device=config["device"],
    resources:
        gpu=1,
    log:
        "logs/train_gan.log",
    benchmark:
        "logs/benchmarks/train_gan.tsv"
    shell:
        "gan2shape train-gan --out-dir {params.out} --steps {params.steps} --pool {params.pool} --r1 {params.r1} "
        "{params.max_seconds} --seed {params.seed} --device {params.device} --export {output.gan} > {log} 2>&1"
