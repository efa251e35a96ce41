# Accuracy against ground truth, the run summary DVC tracks, figures per image, the HTML report.
import shlex


if GT:

    rule evaluate:
        """SIDE / MAD of every method against the ground-truth depth."""
        conda:
            ENV
        input:
            evaluate_inputs,
            gt=expand("{gt}", gt=[gt_depth_path(_W(n)) for n in IMAGES]),
        output:
            json=f"{RES}/evaluation.json",
            csv="results/per_image.csv",
        params:
            names=" ".join(IMAGES),
            names_file=evaluated_list,
            gt=evaluate_gt_pattern,
            encoding=D["gt_encoding"],
            methods=evaluate_methods,
            size=D["size"],
            dataset=DS,
            flags="",  # further evaluate flags (the world-v2 benchmark: --allow-failed)
        log:
            f"{RES}/logs/evaluate.log",
        shell:
            "(printf '%s\\n' {params.names} > {params.names_file} && "
            "gan2shape evaluate --list {params.names_file} --gt '{params.gt}' --gt-encoding {params.encoding} "
            "--method {params.methods} --image-size {params.size} --dataset {params.dataset} "
            "--out-json {output.json} --out-csv {output.csv} {params.flags}) > {log} 2>&1"


rule summarize:
    """The run's headline numbers (results/<dataset>/metrics.json and the DVC metric results/metrics.json)."""
    conda:
        ENV
    input:
        runs=reconstructions(),
        evaluation=f"{RES}/evaluation.json" if GT else [],
    output:
        ds=f"{RES}/metrics.json",
        top="results/metrics.json",
    params:
        evaluation=f"--evaluation {RES}/evaluation.json" if GT else "",
        dataset=DS,
        preset=config["preset"],
        np=config["np"],
        main=f"gan2shape-{PRIORS[0]}",
    log:
        f"{RES}/logs/summarize.log",
    shell:
        "(gan2shape summarize --runs {input.runs} {params.evaluation} --dataset {params.dataset} "
        "--preset {params.preset} --np {params.np} --main {params.main} --out {output.ds} && "
        "cp {output.ds} {output.top}) > {log} 2>&1"


# The report's Parameters table: the configuration values that produced the run (KEY=VALUE words).
# (the joint pre-train's block only when the dataset's DAG makes it)
NOT_REPORTED = ("presets", "train_gan", "synthetic") + (() if D.get("joint_pretrain") else ("joint_pretrain",))
REPORT_CONFIG = {**{k: v for k, v in config.items() if k not in NOT_REPORTED},
                 f"presets.{config['preset']}": PRESET}
REPORT_PARAMS = " ".join(
    shlex.quote(f"{k}={v}" if kk is None else f"{k}.{kk}={vv}")
    for k, v in REPORT_CONFIG.items()
    for kk, vv in (v.items() if isinstance(v, dict) else [(None, v)])
)
# Any preset but the original schedules is a smoke run, and the report says so.
SMOKE = (
    ""
    if config["preset"] == "full"
    else f"--smoke-run '{config['preset']} preset: {PRESET['stage_iters'] or 'original'} iterations per step, "
    f"{PRESET['num_stages'] or 'original'} stage(s), {len(IMAGES)} images"
    + (f", started from the committed joint pre-train {D['pretrain']} (width {D.get('pretrain_net_width', 1)})"
       if JOINT else "")
    + "'"
)


rule figures:
    """Per image: input | prior | depth | ground truth | error maps, normals, albedo, shading, relighting and
    rotation GIFs, meshes, a panel, and run.json (the run's metrics and log, read by the report)."""
    conda:
        ENV
    input:
        run=f"{RES}/reconstruct/{{prior}}/{{image}}/metrics.json",
        log=f"{RES}/reconstruct/{{prior}}/{{image}}/log.json",
        image=image_path,
        prior=[] if OFFICIAL else prior_depth_path,
        gt=gt_depth_path,
    output:
        panel=f"{RES}/figures/{{prior}}/{{image}}/panel.png",
        relight=f"{RES}/figures/{{prior}}/{{image}}/relight.gif",
        rotate=f"{RES}/figures/{{prior}}/{{image}}/rotate.gif",
        mesh=f"{RES}/figures/{{prior}}/{{image}}/mesh.obj",
        run=f"{RES}/figures/{{prior}}/{{image}}/run.json",
    params:
        run=run_dir,
        out=out_dir,
        preset=D["preset"],
        size=D["size"],
        crop="--crop 0" if SYNTHETIC else "",
        prior="" if OFFICIAL else "--prior-depth",
        gt=gt_flag,
        gt_encoding=D["gt_encoding"] or "unsup3d",
        frames=config["figures"]["frames"],
        max_yaw=D["max_yaw"],
    log:
        f"{RES}/logs/figures/{{prior}}/{{image}}.log",
    shell:
        "gan2shape figures --result-dir {params.run} --image {input.image} --out-dir {params.out} "
        "--preset {params.preset} --image-size {params.size} {params.crop} {params.prior} {input.prior} --prior-name {wildcards.prior} {params.gt} "
        "--gt-encoding {params.gt_encoding} --n-frames {params.frames} --max-yaw {params.max_yaw} > {log} 2>&1"


rule report:
    """A static HTML page: run facts, accuracy tables and plots, training curves, every image's figures,
    the parameters."""
    conda:
        ENV
    input:
        metrics=rules.summarize.output.ds,
        runs=expand(f"{RES}/figures/{{prior}}/{{image}}/run.json", prior=PRIORS, image=IMAGES),
        csv=rules.evaluate.output.csv if GT else [],
    output:
        html="results/report/index.html",
    params:
        dirs=expand(f"{RES}/figures/{{prior}}/{{image}}", prior=PRIORS, image=IMAGES),
        title=f"GAN2Shape on {DS} ({config['preset']} preset, N_p = {config['np']})",
        config=REPORT_PARAMS,
        smoke=SMOKE,
    log:
        f"{RES}/logs/report.log",
    shell:
        "gan2shape report --metrics-json {input.metrics} --metrics-csv {input.csv} "
        "--image-dirs {params.dirs} --param {params.config} {params.smoke} --out {output.html} "
        "--title '{params.title}' > {log} 2>&1"
