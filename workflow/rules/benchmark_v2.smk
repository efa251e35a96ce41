# The world-v2 accuracy benchmark as targets (config/benchmark_v2.yaml; docs/RESULTS.md "Benchmark v2"):
#   snakemake synthetic_v2_benchmark --cores 16 --resources gpu=14 --configfile config/benchmark_v2.yaml
# The first N held-out images of each family are segmented and inverted (one batched job each, both
# families), given each prior, and reconstructed by every enabled row of `runs` (and the N_p sweep) in
# jobs of the recipe's `group` images; `gan2shape evaluate` scores every row per family and
# `gan2shape world-table` gathers results/synthetic_v2/gan2shape.json. The jobs are the DAG's own rules
# (`use rule ... with:`); working files lie in `work` (results/benchmark_v2/), a run's results in
# <work>/<family>/<row>/reconstruct/<unit>/<image>/ and its resumable checkpoint in .../checkpoints/<unit>.ckpt.

if B2:

    rule synthetic_v2_benchmark:
        """The world-v2 benchmark: gan2shape.json, a per-image CSV and a figure per family."""
        input:
            f"{B2['out']}/gan2shape.json",
            expand(f"{B2['out']}/gan2shape_{{family}}.csv", family=B2["families"]),
            expand(f"{B2['out']}/figure_{{family}}.png", family=list(bench2_figures(B2))),

    use rule segment as bench2_segment with:
        input:
            images=bench2_all_images,
            net=SEGMENT_NET,
        output:
            masks=expand(f"{B2W}/segment/{{image}}_mask.png", image=bench2_all_names()),
            conf=expand(f"{B2W}/segment/{{image}}_conf.npy", image=bench2_all_names()),
        params:
            command="segment",
            size=B2["size"],
            parser_size=f"--parser-size {config['segment']['parser_size']}",
            faithful="",
        log:
            f"{B2W}/logs/segment.log",
        benchmark:
            f"{B2W}/benchmarks/segment.tsv"

    use rule invert as bench2_invert with:
        input:
            images=bench2_all_images,
            masks=expand(f"{B2W}/segment/{{image}}_mask.png", image=bench2_all_names()),
            gan=GAN,
        output:
            latents=expand(f"{B2W}/invert/{{image}}.pt", image=bench2_all_names()),
            summary=f"{B2W}/invert/inversion_summary.json",
        params:
            steps=B2["inversion_steps"],
        log:
            f"{B2W}/logs/invert.log",
        benchmark:
            f"{B2W}/benchmarks/invert.tsv"

    use rule prior as bench2_prior with:
        input:
            unpack(bench2_prior_source),
        output:
            npy=f"{B2W}/prior/{{prior}}/{{image}}.npy",
            png=f"{B2W}/prior/{{prior}}/{{image}}.png",
        params:
            size=B2["size"],
        log:
            f"{B2W}/logs/prior/{{prior}}/{{image}}.log",
        wildcard_constraints:
            prior="|".join(B2PRIORS),
            image="|".join(bench2_all_names()),

    use rule pretrain_depth as bench2_pretrain_depth with:
        input:
            image=bench2_image,
            prior=f"{B2W}/prior/{{prior}}/{{image}}.npy",
        output:
            pth=f"{B2W}/pretrain/{{prior}}/{{image}}.pth",
        params:
            size=B2["size"],
            iters=B2["prior_iters"],
        log:
            f"{B2W}/logs/pretrain/{{prior}}/{{image}}.log",
        benchmark:
            f"{B2W}/benchmarks/pretrain/{{prior}}/{{image}}.tsv"
        wildcard_constraints:
            prior="|".join(B2PRIORS),
            image="|".join(bench2_all_names()),

    # one job per row, family and unit (`group` images): the recipe's flags, resumable from its checkpoint
    use rule reconstruct as bench2_reconstruct with:
        input:
            image=bench2_test_files(".png"),
            latent=bench2_latents,
            pretrain=bench2_pretrain,
            gt=bench2_test_files("_depth.png"),
            scene=bench2_test_files(".json"),
            mask=bench2_masks,
            gan=GAN,
            view_mvn=VIEW_MVN,
            light_mvn=LIGHT_MVN,
        output:
            run=directory(f"{B2W}/{{family}}/{{run}}/reconstruct/{{group}}"),
        params:
            out=bench2_out,
            names=bench2_names_flag,
            checkpoint=f"{B2W}/{{family}}/{{run}}/checkpoints/{{group}}.ckpt",
            preset=bench2_preset,
            size=B2["size"],
            crop="--crop 0",
            np=bench2_np,
            schedule=bench2_schedule,
            gt=bench2_gt_flag,
            gt_encoding="synthetic",
            flags=bench2_flags,
            device=bench2_device,
        resources:
            gpu=1,
            **gpu_slots(bench2_index),
        log:
            f"{B2W}/{{family}}/{{run}}/logs/reconstruct/{{group}}.log",
        benchmark:
            f"{B2W}/{{family}}/{{run}}/benchmarks/reconstruct/{{group}}.tsv"
        wildcard_constraints:
            family="|".join(B2["families"]),
            run="|".join(re.escape(k) for k in B2JOBS),
            group=r"g\d+",

    use rule evaluate as bench2_evaluate with:
        input:
            bench2_evaluate_inputs,
            gt=bench2_gts,
        output:
            json=f"{B2W}/{{family}}/evaluation.json",
            csv=f"{B2['out']}/gan2shape_{{family}}.csv",
        params:
            names=bench2_names_list,
            gt=bench2_gt_pattern,
            encoding="synthetic",
            methods=bench2_methods,
            size=B2["size"],
            dataset="{family}",
            flags="--allow-failed",
        log:
            f"{B2W}/{{family}}/logs/evaluate.log",
        wildcard_constraints:
            family="|".join(B2["families"]),

    rule bench2_table:
        """{family: {method: SIDE / MAD}} of every row (the keys and units of baselines.json)."""
        conda:
            ENV
        input:
            list(bench2_evaluations().values()),
        output:
            json=f"{B2['out']}/gan2shape.json",
        params:
            evaluations=bench2_table_flags,
            note=bench2_table_note,
        log:
            f"{B2W}/logs/table.log",
        shell:
            "gan2shape world-table --evaluation {params.evaluations} --note {params.note} --out {output.json} "
            "> {log} 2>&1"

    rule bench2_figure:
        """Per image of the family's figure row: input | prior | depth | ground truth | error | relit | rotated."""
        conda:
            ENV
        input:
            runs=bench2_figure_units,
            images=bench2_figure_files(".png"),
            gts=bench2_figure_files("_depth.png"),
            priors=bench2_figure_priors,
        output:
            png=f"{B2['out']}/figure_{{family}}.png",
        params:
            dirs=bench2_figure_dirs,
            names=bench2_figure_names,
            prior=bench2_figure_prior_flag,
            label=bench2_figure_label,
            size=B2["size"],
        log:
            f"{B2W}/{{family}}/logs/figure.log",
        wildcard_constraints:
            family="|".join(B2["families"]),
        shell:
            "gan2shape comparison-figure --result-dir {params.dirs} --image {input.images} --gt-depth {input.gts} "
            "--gt-encoding synthetic {params.prior} --name {params.names} --label {params.label} "
            "--image-size {params.size} --out {output.png} > {log} 2>&1"
