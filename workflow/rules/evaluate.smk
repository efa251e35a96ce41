# Accuracy against ground truth, the run summary DVC tracks, figures per image, the HTML report.


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
        log:
            f"{RES}/logs/evaluate.log",
        shell:
            "(printf '%s\\n' {params.names} > {params.names_file} && "
            "gan2shape evaluate --list {params.names_file} --gt '{params.gt}' --gt-encoding {params.encoding} "
            "--method {params.methods} --image-size {params.size} --dataset {params.dataset} "
            "--out-json {output.json} --out-csv {output.csv}) > {log} 2>&1"


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


rule figures:
    """Per image: depth / normal / albedo / shading maps, relighting and rotation GIFs, meshes, a panel."""
    conda:
        ENV
    input:
        run=f"{RES}/reconstruct/{{prior}}/{{image}}/metrics.json",
        image=image_path,
    output:
        panel=f"{RES}/figures/{{prior}}/{{image}}/panel.png",
        relight=f"{RES}/figures/{{prior}}/{{image}}/relight.gif",
        rotate=f"{RES}/figures/{{prior}}/{{image}}/rotate.gif",
        mesh=f"{RES}/figures/{{prior}}/{{image}}/mesh.obj",
    params:
        run=run_dir,
        out=out_dir,
        size=D["size"],
        frames=config["figures"]["frames"],
        max_yaw=D["max_yaw"],
    log:
        f"{RES}/logs/figures/{{prior}}/{{image}}.log",
    shell:
        "gan2shape figures --result-dir {params.run} --image {input.image} --out-dir {params.out} "
        "--image-size {params.size} --n-frames {params.frames} --max-yaw {params.max_yaw} > {log} 2>&1"


rule report:
    """A static HTML page linking metrics, plots and every image's figures."""
    conda:
        ENV
    input:
        metrics=f"{RES}/metrics.json",
        panels=expand(f"{RES}/figures/{{prior}}/{{image}}/panel.png", prior=PRIORS, image=IMAGES),
        evaluation=f"{RES}/evaluation.json" if GT else [],
        csv="results/per_image.csv" if GT else [],
    output:
        html="results/report/index.html",
    params:
        dirs=expand(f"{RES}/figures/{{prior}}/{{image}}", prior=PRIORS, image=IMAGES),
        title=f"GAN2Shape on {DS} ({config['preset']} preset, N_p = {config['np']})",
    log:
        f"{RES}/logs/report.log",
    shell:
        "gan2shape report --metrics-json {input.metrics} --metrics-csv {input.csv} "
        "--image-dirs {params.dirs} --out {output.html} --title '{params.title}' > {log} 2>&1"
