# The synthetic world's accuracy benchmark as targets (config/benchmark.yaml; the README's table):
#   snakemake synthetic_benchmark --cores 16 --resources gpu=14 --configfile config/benchmark.yaml -R bench_evaluate
# (-R recomputes the committed tables; without it Snakemake finds them present and does nothing.)
# For each family the first N held-out images are segmented, inverted, given each prior and
# reconstructed with each prior; `evaluate` writes results/synthetic_benchmark/<name>_<family>_<N>.{json,csv}.
# The jobs are the DAG's own rules (`use rule ... with:`) on the families' images; working files lie in
# results/benchmark/ (masks and latents of both families) and results/benchmark/<family>/ (the runs in
# results/benchmark/<family>/<name>/).

if BENCH:

    rule synthetic_benchmark:
        """The benchmark's tables: SIDE / MAD of every method on the first N images of each family."""
        input:
            expand(
                "results/synthetic_benchmark/{name}_{family}_{n}.{ext}",
                name=BENCH["name"],
                family=BENCH["families"],
                n=BENCH["images"],
                ext=["json", "csv"],
            ),

    # segmentation and inversion: one batched job each over every family's images
    use rule segment as bench_segment with:
        input:
            images=bench_all_files(f"{BROOT}/{{family}}/{{image}}.png"),
            net=SYN["segmenter"],
        output:
            masks=bench_all_files(f"{BW}/segment/{{image}}_mask.png"),
            conf=bench_all_files(f"{BW}/segment/{{image}}_conf.npy"),
        params:
            command="segment",
            size=SYN["size"],
            parser_size=f"--parser-size {config['segment']['parser_size']}",
            faithful="",
        log:
            f"{BW}/logs/segment.log",
        benchmark:
            f"{BW}/benchmarks/segment.tsv"

    use rule invert as bench_invert with:
        input:
            images=bench_all_files(f"{BROOT}/{{family}}/{{image}}.png"),
            masks=bench_all_files(f"{BW}/segment/{{image}}_mask.png"),
            gan=SYN["gan"],
        output:
            latents=bench_all_files(f"{BW}/invert/{{image}}.pt"),
            summary=f"{BW}/invert/inversion_summary.json",
        params:
            steps=BENCH["inversion_steps"],
        log:
            f"{BW}/logs/invert.log",
        benchmark:
            f"{BW}/benchmarks/invert.tsv"

    use rule prior as bench_prior with:
        input:
            unpack(bench_prior_source),
        output:
            npy=f"{BW}/{{family}}/prior/{{prior}}/{{image}}.npy",
            png=f"{BW}/{{family}}/prior/{{prior}}/{{image}}.png",
        params:
            size=SYN["size"],
        log:
            f"{BW}/{{family}}/logs/prior/{{prior}}/{{image}}.log",
        wildcard_constraints:
            family="face|box",
            prior="|".join(BPRIORS),
            image="[^/]+",

    use rule pretrain_depth as bench_pretrain_depth with:
        input:
            image=bench_image,
            prior=f"{BW}/{{family}}/prior/{{prior}}/{{image}}.npy",
        output:
            pth=f"{BW}/{{family}}/pretrain/{{prior}}/{{image}}.pth",
        params:
            size=SYN["size"],
            iters=BENCH["prior_iters"],
        log:
            f"{BW}/{{family}}/logs/pretrain/{{prior}}/{{image}}.log",
        benchmark:
            f"{BW}/{{family}}/benchmarks/pretrain/{{prior}}/{{image}}.tsv"
        wildcard_constraints:
            family="face|box",
            prior="|".join(BPRIORS),
            image="[^/]+",

    use rule reconstruct as bench_reconstruct with:
        input:
            image=bench_image,
            latent=f"{BW}/invert/{{image}}.pt",
            pretrain=f"{BW}/{{family}}/pretrain/{{prior}}/{{image}}.pth",
            gt=bench_gt,
            scene=f"{BROOT}/{{family}}/{{image}}.json",
            gan=SYN["gan"],
            view_mvn=SYN["view_mvn"],
            light_mvn=SYN["light_mvn"],
        output:
            depth=f"{BW}/{{family}}/{BENCH['name']}/reconstruct/{{prior}}/{{image}}/depth.npy",
            recon_depth=f"{BW}/{{family}}/{BENCH['name']}/reconstruct/{{prior}}/{{image}}/recon_depth.npy",
            albedo=f"{BW}/{{family}}/{BENCH['name']}/reconstruct/{{prior}}/{{image}}/albedo.npy",
            view=f"{BW}/{{family}}/{BENCH['name']}/reconstruct/{{prior}}/{{image}}/view.json",
            light=f"{BW}/{{family}}/{BENCH['name']}/reconstruct/{{prior}}/{{image}}/light.json",
            metrics=f"{BW}/{{family}}/{BENCH['name']}/reconstruct/{{prior}}/{{image}}/metrics.json",
            loss_log=f"{BW}/{{family}}/{BENCH['name']}/reconstruct/{{prior}}/{{image}}/log.json",
        params:
            checkpoint=f"{BW}/{{family}}/{BENCH['name']}/checkpoints/{{prior}}/{{image}}.ckpt",
            preset="synface",
            size=SYN["size"],
            crop="--crop 0",
            np=BENCH["np"],
            schedule=f"--stage-iters {','.join(str(v) for v in BENCH['stage_iters'])} --collect-iters {BENCH['collect_iters']}",
            gt=bench_gt_flag,
            gt_encoding="synthetic",
            flags=bench_run_flags,
        log:
            f"{BW}/{{family}}/{BENCH['name']}/logs/reconstruct/{{prior}}/{{image}}.log",
        benchmark:
            f"{BW}/{{family}}/{BENCH['name']}/benchmarks/reconstruct/{{prior}}/{{image}}.tsv"
        wildcard_constraints:
            family="face|box",
            prior="|".join(BENCH["priors"]),
            image="[^/]+",

    use rule evaluate as bench_evaluate with:
        input:
            bench_evaluate_inputs,
            gt=bench_gts,
        output:
            json=f"results/synthetic_benchmark/{BENCH['name']}_{{family}}_{BENCH['images']}.json",
            csv=f"results/synthetic_benchmark/{BENCH['name']}_{{family}}_{BENCH['images']}.csv",
        params:
            names=bench_names,
            names_file=bench_names_file,
            gt=bench_gt_pattern,
            encoding="synthetic",
            methods=bench_methods,
            size=SYN["size"],
            dataset=bench_dataset,
        log:
            f"{BW}/{{family}}/{BENCH['name']}/logs/evaluate.log",
        wildcard_constraints:
            family="face|box",
