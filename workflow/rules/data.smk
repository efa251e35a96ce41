# Inputs: the synthetic world's held-out renders, the official release (real datasets), GAN inversion.


rule synthesize:
    """Render the synthetic world's held-out test set with ground truth (deterministic by seed)."""
    conda:
        ENV
    output:
        lst=f"data/synthetic/test/{{family}}/list.txt",
    params:
        n=SYN["test_n"],
        seed=SYN["test_seed"],
        size=SYN["size"],
        supersample=SYN["supersample"],
        device=config["device"],
    log:
        "logs/synthesize/{family}.log",
    benchmark:
        "logs/benchmarks/synthesize/{family}.tsv"
    shell:
        "gan2shape synthesize --family {wildcards.family} --n {params.n} --seed {params.seed} "
        "--size {params.size} --supersample {params.supersample} --device {params.device} "
        "--out data/synthetic/test > {log} 2>&1"


# What the configuration needs: the release always; torchvision's VGG16 only for the lpips_vgg
# perceptual term (reconstruct or invert). On failure the cause and the ways out (mirror, files placed
# by hand with their expected paths and hashes, the synthetic default) are printed, not only logged.
DOWNLOAD_WHAT = ["release"] + (
    ["vgg"] if "lpips_vgg" in (config["reconstruct"]["perceptual"], config["invert"]["perceptual"]) else []
)

if not SYNTHETIC:

    rule download:
        """Fetch and verify the official GAN2Shape release (and VGG16 when lpips_vgg is used) for a real dataset."""
        conda:
            ENV
        output:
            lst=LIST,
        params:
            what=" ".join(DOWNLOAD_WHAT),
            dataset=DS,
            mirror=f"--mirror {config['download']['mirror']}" if config["download"]["mirror"] else "",
            retries=config["download"]["retries"],
            timeout=config["download"]["timeout"],
        log:
            "logs/download.log",
        shell:
            "gan2shape download --what {params.what} --dataset {params.dataset} --dest . {params.mirror} "
            "--retries {params.retries} --timeout {params.timeout} > {log} 2>&1 "
            "|| {{ echo 'gan2shape download failed ({log}):' >&2; grep -m 1 -A 200 ' ERROR ' {log} >&2; exit 1; }}"


rule invert:
    """Project the synthetic test images into W (batched; the real datasets ship their latents)."""
    conda:
        ENV
    input:
        images=all_images,
        masks=expand(f"{RES}/segment/{{image}}_mask.png", image=IMAGES),
        gan=GAN,
    output:
        latents=expand(f"{RES}/invert/{{image}}.pt", image=IMAGES),
        summary=f"{RES}/invert/inversion_summary.json",
    params:
        out=out_dir,
        steps=PRESET["inversion_steps"],
        space=config["invert"]["space"],
        perceptual=config["invert"]["perceptual"],
        seed=config["seed"],
        device=config["device"],
    resources:
        gpu=1,
    log:
        f"{RES}/logs/invert.log",
    benchmark:
        f"{RES}/benchmarks/invert.tsv"
    shell:
        "gan2shape invert --gan {input.gan} --images {input.images} --masks {input.masks} "
        "--out-dir {params.out} --steps {params.steps} --space {params.space} "
        "--perceptual {params.perceptual} --seed {params.seed} --device {params.device} > {log} 2>&1"
